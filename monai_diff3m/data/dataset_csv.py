"""The dataset CSV reader: one CSV layout (CheXpert's columns) into MONAI record lists, for every dataset.

CheXpert, the MIMIC pipeline in ``preprocessing/`` and the phantom generator all write the same CSV layout
(``monai_diff3m.schema``), so this one reader serves every dataset the bundles train or evaluate on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai_diff3m import schema
from monai_diff3m.data.csv_files import DatasetCSVError, read_csv_file
from monai_diff3m.data.splits import SplitError, patient_ids

logger = logging.getLogger(__name__)

IMAGE_KEY = "image"
LABEL_KEY = "label"
MASK_KEY = "mask"


__all__ = ["DatasetCSVError", "IMAGE_KEY", "LABEL_KEY", "MASK_KEY", "read_dataset_csv"]


def _optional_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def read_dataset_csv(
    csv_path: str | Path,
    image_root: str | Path | None = None,
    frontal_only: bool = True,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Read a dataset CSV into a list of records for a MONAI ``Dataset``.

    Each record holds the absolute image path under ``"image"``, the anomaly label under ``"label"`` (1 abnormal,
    i.e. ``No Finding != 1``; absent when the CSV has no label column), the lesion mask path under ``"mask"`` when
    the CSV has one, the patient under ``schema.PATIENT_ID`` when the CSV names it (a patient column or a
    CheXpert/MIMIC path, see :func:`monai_diff3m.data.splits.patient_ids`; used for patient-level bootstrap
    intervals), and every schema column verbatim (EHR values are encoded later by ``EncodeEHRd``).

    Args:
        csv_path: the CSV file.
        image_root: folder that ``Path`` is relative to; defaults to the CSV's folder.
        frontal_only: drop lateral rows (the method is frontal-only), as CheXpert lists both.
        check_files: fail early, naming the row, when an image file does not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetCSVError(f"dataset CSV not found: {csv_path}")
    table = read_csv_file(csv_path, "dataset CSV", dtype={schema.PATH: str, schema.MASK: str, schema.LESION: str})
    missing = [column for column in schema.REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetCSVError(f"dataset CSV {csv_path} lacks required column(s) {missing}; found {list(table.columns)}")
    if table.empty:
        raise DatasetCSVError(f"dataset CSV {csv_path} has a header but no rows")
    duplicated = table[schema.PATH][table[schema.PATH].duplicated()].tolist()
    if duplicated:
        raise DatasetCSVError(f"dataset CSV {csv_path} lists image path(s) more than once: {duplicated[:5]}")
    if frontal_only and schema.FRONTAL_LATERAL in table.columns:
        lateral = [
            _frontal_lateral(value, csv_path, row_number) == schema.LATERAL
            for row_number, value in zip(table.index + 2, table[schema.FRONTAL_LATERAL])
        ]
        if any(lateral):  # CheXpert lists both views; a count, so that no row leaves without a word
            logger.warning("%s: %d lateral row(s) left out (Diff3M is frontal-only)", csv_path, sum(lateral))
        table = table[[not is_lateral for is_lateral in lateral]]
        if table.empty:
            raise DatasetCSVError(f"dataset CSV {csv_path} has no frontal rows ({schema.FRONTAL_LATERAL})")

    root = Path(image_root) if image_root is not None else csv_path.parent
    try:
        patients: list[str | None] = patient_ids(table, str(csv_path)).tolist()
    except SplitError:
        patients = [None] * len(table)
    schema_columns = {*schema.CSV_COLUMNS, schema.LESION, *schema.ehr_columns()}
    categorical = [field for field in schema.ehr_fields() if field.is_categorical and field.name in table.columns]
    records = []
    for row_number, row, patient in zip(table.index + 2, table.to_dict("records"), patients):
        relative = _optional_str(row[schema.PATH])
        if relative is None:
            raise DatasetCSVError(f"{csv_path} row {row_number}: column {schema.PATH!r} is empty")
        image_path = root / relative
        if check_files and not image_path.is_file():
            raise DatasetCSVError(f"{csv_path} row {row_number}: image {image_path} does not exist")
        record: dict[str, Any] = {key: value for key, value in row.items() if key in schema_columns}
        for field in categorical:
            record[field.name] = _canonical_or_raw(field.canonical, record[field.name])
        record[IMAGE_KEY] = str(image_path)
        record["source"] = f"{csv_path} row {row_number}"
        if patient is not None:
            record[schema.PATIENT_ID] = patient
        if schema.NO_FINDING in table.columns:
            record[LABEL_KEY] = _anomaly_label(row[schema.NO_FINDING], csv_path, row_number)
        mask = _optional_str(row.get(schema.MASK))
        record[MASK_KEY] = str(root / mask) if mask else None
        records.append(record)
    return records


def _canonical_or_raw(canonical: Callable[[Any], str | None], value: Any) -> Any:
    """The schema spelling of a categorical cell (sex, view: ``m`` -> ``Male``), so subgroups do not split by
    spelling; a value outside the vocabulary is kept as read, for ``EncodeEHRd`` to report with its record (at
    inference one bad row is a ``failures.csv`` row, not a dead run)."""
    try:
        return canonical(value)
    except ValueError:
        return value


def _frontal_lateral(value: Any, csv_path: Path, row_number: int) -> str | None:
    """``Frontal``/``Lateral`` in any case (``frontal`` rows were dropped from the metrics without a message)."""
    try:
        return schema.canonical_frontal_lateral(value)
    except ValueError as error:
        raise DatasetCSVError(f"{csv_path} row {row_number}: {error}") from error


def _anomaly_label(no_finding: Any, csv_path: Path, row_number: int) -> int:
    try:
        return schema.anomaly_label(no_finding)
    except ValueError as error:
        raise DatasetCSVError(f"{csv_path} row {row_number}: {error}") from error
