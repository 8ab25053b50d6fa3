"""EHR encoding: raw CSV/DICOM values -> per-slot scalars and an explicit missing mask.

The network turns every scalar *slot* into one token (docs/method.md §2), so the encoding decides what a token
means: age is mapped to about [0, 1] by (age − low)/(high − low); sex and view are one-hot (two slots each); MIMIC
measurements are z-scored with statistics fitted on the training split only and saved next to the model, so
inference uses the training scale.
A missing value is never dropped or written as 0: its slots are flagged in ``<key>_missing`` and the network
substitutes a learned "missing" embedding.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_diff3m import schema
from monai_diff3m.io import write_json_atomic

logger = logging.getLogger(__name__)

#: (low, high) of the age encoding (age − low)/(high − low): this project's age/100. The authors use (1, 100), i.e.
#: (age − 1)/99. A token is value·W + b, so an affine change of the value is absorbed by W and b: the two encodings
#: give the same family of models and differ only in where training starts.
DEFAULT_AGE_RANGE = (0.0, 100.0)


class EHRValueError(ValueError):
    """An EHR value is missing where required, or not what the field expects; the message names record and field."""


class EHRStatisticsError(ValueError):
    """The EHR statistics file saved with a checkpoint is unreadable or malformed; the message names the file."""


def ehr_slot_names(groups: Sequence[str]) -> list[str]:
    """Token names, in order, for the chosen EHR groups (used for attribution columns and docs)."""
    return [slot for field in schema.ehr_fields(groups) for slot in field.slots]


def ehr_group_sizes(groups: Sequence[str]) -> list[int]:
    """Number of tokens per group, the ``ehr_group_sizes`` argument of ``Diff3MUNet``."""
    schema.ehr_fields(groups)
    return [len(ehr_slot_names([group])) for group in groups]


def zscored_columns(groups: Sequence[str] | None = None) -> list[str]:
    """The numeric columns of ``groups`` (default: all) that are z-scored with the training statistics."""
    return [
        field.name for field in schema.ehr_fields(groups) if not field.is_categorical and field.normaliser == "zscore"
    ]


def _is_missing(value: Any) -> bool:
    return schema.is_missing(float(value) if isinstance(value, np.floating) else value)


class EHRStatistics:
    """Centre and scale of each numeric measurement, fitted on the training split only.

    Saved as JSON beside the checkpoint (``mean``/``std`` tables: the centre and scale used for z-scoring) so that
    inference and evaluation z-score with the training scale (the authors' loader re-fits on every split it reads,
    so a test image's encoding depends on which other images are scored with it; the reference scoring preset
    reproduces that with ``EHRStatistics.fit(..., robust=False)`` on the scored split).

    ``fit`` is robust by default (median and IQR / 1.349, the standard deviation of a normal distribution) and leaves
    out values outside ``schema.PLAUSIBLE_RANGES`` (the encoder refuses those records): one typo such as Height 1e9
    moved the mean to 21,276,660 and encoded every correct height to the same value.
    """

    def __init__(self, mean: Mapping[str, float], std: Mapping[str, float]) -> None:
        self.mean = dict(mean)
        self.std = dict(std)

    @classmethod
    def fit(
        cls,
        records: Iterable[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        robust: bool = True,
    ) -> EHRStatistics:
        """Fit ``columns`` (default: every z-scored field, :func:`zscored_columns`) on ``records``; ``robust=False``
        gives the mean and standard deviation, as the authors' code."""
        columns = zscored_columns() if columns is None else columns
        values: dict[str, list[float]] = {column: [] for column in columns}
        for record in records:
            for column in columns:
                value = record.get(column)
                if not _is_missing(value):
                    number = _to_float(value, column, record)
                    if schema.implausible(column, number) is None:
                        values[column].append(number)
        mean, std = {}, {}
        for column, column_values in values.items():
            if len(column_values) < 2:
                mean[column], std[column] = 0.0, 1.0
                continue
            spread = float(np.std(column_values))
            if robust:
                low, centre, high = np.percentile(column_values, [25, 50, 75])
                mean[column], std[column] = float(centre), float(high - low) / 1.349 or spread or 1.0
            else:
                mean[column], std[column] = float(np.mean(column_values)), spread or 1.0
        return cls(mean, std)

    @classmethod
    def load(cls, path: str | Path) -> EHRStatistics:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            EHRStatisticsError: not JSON, or not a ``mean`` and a ``std`` per measurement (finite, std positive).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"EHR statistics file {path} not found; it is written by training next to the model"
            )
        remedy = "it is written by training next to the checkpoint: restore it from the training run or retrain"
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EHRStatisticsError(f"EHR statistics file {path} is not valid JSON ({error}); {remedy}") from error
        problem = _statistics_problem(content)
        if problem:
            raise EHRStatisticsError(f"EHR statistics file {path} {problem}; {remedy}")
        return cls(content["mean"], content["std"])

    def save(self, path: str | Path) -> None:
        write_json_atomic({"mean": self.mean, "std": self.std}, path)

    def standardise(self, column: str, value: float) -> float:
        return (value - self.mean.get(column, 0.0)) / self.std.get(column, 1.0)


def _statistics_problem(content: Any) -> str | None:
    """What is wrong with a parsed statistics file, or None: it must map ``mean`` and ``std`` to finite numbers."""
    if not isinstance(content, dict) or not {"mean", "std"} <= set(content):
        return "lacks the 'mean' and 'std' tables"
    for table in ("mean", "std"):
        values = content[table]
        if not isinstance(values, dict):
            return f"has a {table!r} entry that is not a table of measurements"
        for column, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"has {table}[{column!r}] = {value!r}, expected a finite number"
            if table == "std" and value <= 0:
                return f"has std[{column!r}] = {value!r}, expected a positive number"
    return None


def fit_and_save_ehr_statistics(records: Sequence[Mapping[str, Any]], path: str | Path) -> EHRStatistics:
    """Fit on the training records and save; the bundle calls this once before training starts."""
    statistics = EHRStatistics.fit(records)
    statistics.save(path)
    return statistics


def missing_ehr_fractions(records: Sequence[Mapping[str, Any]], groups: Sequence[str]) -> dict[str, float]:
    """Fraction of ``records`` whose value of each field of ``groups`` is absent or empty, in field order."""
    columns = [field.name for field in schema.ehr_fields(groups)]
    total = max(len(records), 1)
    return {column: sum(_is_missing(record.get(column)) for record in records) / total for column in columns}


def warn_missing_ehr(records: Sequence[Mapping[str, Any]], groups: Sequence[str], ieca_mode: str) -> dict[str, float]:
    """Log the training films' missing EHR, once per field, and return :func:`missing_ehr_fractions`.

    Training encodes an absent value as the learned "missing" token, as inference does, so films without
    demographics (the ZhangLab set has none) train; an EHR model trained on a field that is missing for every film
    has learned nothing from it, which the log must say rather than the run failing or passing silently.
    """
    fractions = missing_ehr_fractions(records, groups)
    if ieca_mode == "none":
        return fractions
    for column, fraction in fractions.items():
        if fraction == 1.0:
            logger.warning(
                "EHR field %r is missing for all %d training films: the model (ieca_mode=%r) learns it only as "
                "'missing'; train the image-only model (ieca_mode='none') or add the field to the CSV",
                column,
                len(records),
                ieca_mode,
            )
        elif fraction > 0.0:
            logger.info("EHR field %r is missing for %.1f %% of training films", column, 100 * fraction)
    return fractions


def _record_name(record: Mapping[Any, Any]) -> str:
    return str(record.get("source") or record.get("image") or record.get(schema.PATH) or "record")


def _to_float(value: Any, field: str, record: Mapping[str, Any]) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise EHRValueError(f"{_record_name(record)}: field {field!r} must be a number, got {value!r}") from error
    if math.isnan(number) or math.isinf(number):
        raise EHRValueError(f"{_record_name(record)}: field {field!r} must be a finite number, got {value!r}")
    return number


class EncodeEHRd(MapTransform):
    """Encode the raw EHR fields of a record into ``output_key`` (float32 slots) and ``output_key + '_missing'``.

    Args:
        groups: EHR groups to encode, a subset of ``schema.ehr_groups()`` ("demographics", "measurements"); each
            field of ``schema.EHR_FIELDS`` in a group becomes its slots (one-hot categories or one number).
        statistics: training-split statistics for the z-scored fields (the measurements), an ``EHRStatistics`` or a
            path to its JSON; unused when no field of ``groups`` is z-scored.
        required: fields that must be present; a missing one raises ``EHRValueError`` naming record and field.
            Inference on DICOM tags passes ``()`` so absent tags become explicit "missing" tokens.
        output_key: key of the encoded slots; the missing mask goes to ``output_key + "_missing"``.
        allow_missing_keys: treat fields absent from the record as missing values instead of an error.
        age_range: (low, high) of the age encoding (age − low)/(high − low), see ``DEFAULT_AGE_RANGE``.
    """

    def __init__(
        self,
        groups: Sequence[str] = ("demographics", "measurements"),
        statistics: EHRStatistics | str | Path | None = None,
        required: Sequence[str] = (schema.AGE, schema.SEX, schema.VIEW),
        output_key: str = "ehr",
        allow_missing_keys: bool = False,
        age_range: Sequence[float] = DEFAULT_AGE_RANGE,
    ) -> None:
        self.groups = tuple(groups)
        self.fields = schema.ehr_fields(self.groups)
        keys: KeysCollection = [field.name for field in self.fields]
        super().__init__(keys, allow_missing_keys)
        zscored = zscored_columns(self.groups)
        if not zscored:
            statistics = None  # demographics are not z-scored: a missing or damaged statistics file must not stop them
        elif statistics is None:
            raise ValueError(f"EncodeEHRd needs training-split `statistics` to z-score {zscored} (measurements group)")
        elif not isinstance(statistics, EHRStatistics):
            statistics = EHRStatistics.load(statistics)
        self.statistics = statistics
        self.required = frozenset(required)
        self.output_key = output_key
        low, high = (float(bound) for bound in age_range)
        if not high > low:
            raise ValueError(f"age_range must be (low, high) with high > low, got {tuple(age_range)}")
        self.age_range = (low, high)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        record = dict(data)
        for key in self.keys:
            if key not in record and not self.allow_missing_keys:
                raise EHRValueError(f"{_record_name(record)}: EHR field {key!r} is absent from the record")
        values: list[float] = []
        missing: list[float] = []
        for field in self.fields:
            slot_values, slot_missing = self._encode_field(field, record.get(field.name), record)
            values.extend(slot_values)
            missing.extend([float(slot_missing)] * len(slot_values))
        record[self.output_key] = np.asarray(values, dtype=np.float32)
        record[f"{self.output_key}_missing"] = np.asarray(missing, dtype=np.float32)
        return record

    def _encode_field(self, field: schema.EHRField, value: Any, record: Mapping[Any, Any]) -> tuple[list[float], bool]:
        column = field.name
        if field.is_categorical:
            try:
                value = field.canonical(value, repr(column))
            except ValueError as error:
                raise EHRValueError(f"{_record_name(record)}: field {error}") from error
        if _is_missing(value):
            if column in self.required:
                raise EHRValueError(f"{_record_name(record)}: required EHR field {column!r} is missing (NaN/empty)")
            return [0.0] * len(field.slots), True
        if field.is_categorical:
            return [1.0 if value == category else 0.0 for category in field.categories], False
        number = _to_float(value, column, record)
        problem = field.implausible(number)
        if problem:
            raise EHRValueError(f"{_record_name(record)}: field {column!r}: {problem} (got {value!r})")
        if field.normaliser == "age_range":
            low, high = self.age_range
            return [(number - low) / (high - low)], False
        assert self.statistics is not None
        return [self.statistics.standardise(column, number)], False
