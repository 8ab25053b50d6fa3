r"""Step 1: for every MIMIC-CXR image, the nearest MIMIC-IV ``omr`` measurement of each EHR feature.

For each image (subject, study date) and each feature, the ``omr`` record of the same subject whose chart date is
nearest to the study date is kept if it lies within ±``window_days``. Records on the same chart date are averaged,
and so are the two records when one lies as far before the study as the other lies after it. A feature without a
record in the window stays missing (the authors' code writes 0, which the model cannot tell from a measurement).

Only ``"Blood Pressure"``, ``"BMI (kg/m2)"``, ``"Height (Inches)"`` and ``"Weight (Lbs)"`` are used (positional
variants such as ``"Blood Pressure Sitting"`` are ignored); values keep ``omr``'s units (mmHg, kg/m², inches,
lbs), which is what the schema documents. ``omr_names="exact"`` (default) matches these names exactly. The
authors' ``preprocess_MIMIC.py`` tests ``row[3] in result_name``, a substring test, so ``omr`` rows named ``"BMI"``,
``"Height"`` or ``"Weight"`` (no unit in the name) count as ``"BMI (kg/m2)"``, ``"Height (Inches)"`` and
``"Weight (Lbs)"`` too: ``omr_names="substring"`` reproduces that (any ``omr`` name contained in a feature's name
counts for that feature). The exact default keeps only values whose unit the name states. ``omr`` has millions of
rows, so it is read in chunks of ``chunk_rows`` with only four columns parsed, and pruned to the four features and
the subjects that have images before anything is kept; the join itself is two vectorised ``merge_asof`` calls per
feature.

Writes ``<work>/ehr_parts/part-NNNNN.csv`` (``dicom_id`` + EHR columns) and, last, ``<work>/ehr_parts/manifest.json``
listing the parts: step 2 only trusts parts named by a manifest, so a run that dies half-way is never read.

Usage::

    python -m monai_diff3m.preprocessing.mimic.step1_omr_ehr --mimic-cxr /data/mimic-cxr-jpg/2.0.0 \
        --mimic-iv /data/mimiciv/3.1 --work-dir /data/mimic_work
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic, write_json_atomic

from ..common import (
    InputTableError,
    day_numbers,
    exit_on_input_error,
    integer_ids,
    line_number,
    progress,
    read_header,
    read_table,
    require_columns,
    shown,
)
from . import layout

__all__ = [
    "OMR_FEATURES",
    "OMR_NAME_MATCHING",
    "feature_aliases",
    "read_images",
    "read_omr",
    "nearest_records",
    "image_ehr",
    "run",
    "add_arguments",
    "main",
]

#: ``omr`` result names used, and the schema column(s) each one fills ("sys/dia" fills two): the ``omr`` sources of
#: ``schema.EHR_FIELDS`` (today the four named in the module docstring).
OMR_FEATURES: dict[str, tuple[str, ...]] = schema.omr_sources()
#: How ``omr`` result names are matched to ``OMR_FEATURES``: exactly, or the authors' substring test.
OMR_NAME_MATCHING = ("exact", "substring")
_DAY = "day"
_RECORD_DAY = "record_day"
_PART_PATTERN = "part-*.csv"
#: ``omr`` blood pressure text: ``"systolic/diastolic"``.
_SYSTOLIC_DIASTOLIC = r"^([^/]*)/([^/]*)$"


def read_images(metadata_path: Path) -> pd.DataFrame:
    """Return ``dicom_id``, ``subject_id`` and the study date as a day number for every image of the metadata."""
    table = read_table(
        metadata_path,
        (layout.DICOM_ID, layout.SUBJECT_ID, layout.STUDY_DATE),
        integer_columns=(layout.SUBJECT_ID,),
        dtype={layout.DICOM_ID: str},
    )
    duplicated = table[layout.DICOM_ID].duplicated()
    if duplicated.any():
        raise InputTableError(
            f"{metadata_path}: column {layout.DICOM_ID!r} must be unique; "
            f"{shown(table[layout.DICOM_ID][duplicated].iloc[0])} appears more than once"
        )
    days = day_numbers(table[layout.STUDY_DATE], layout.STUDY_DATE_FORMAT, metadata_path, layout.STUDY_DATE)
    return pd.DataFrame(
        {layout.DICOM_ID: table[layout.DICOM_ID], layout.SUBJECT_ID: table[layout.SUBJECT_ID], _DAY: days}
    )


def _parse_values(result_name: str, values: pd.Series) -> pd.DataFrame:
    """Numeric columns of one feature's ``result_value`` text; unparseable values become NaN."""
    columns = OMR_FEATURES[result_name]
    if len(columns) == 1:
        return pd.DataFrame({columns[0]: pd.to_numeric(values, errors="coerce")}, index=values.index)
    halves = values.str.extract(_SYSTOLIC_DIASTOLIC)
    return pd.DataFrame(
        {columns[0]: pd.to_numeric(halves[0], errors="coerce"), columns[1]: pd.to_numeric(halves[1], errors="coerce")},
        index=values.index,
    )


def feature_aliases(result_names: Iterable[str], matching: str = "exact") -> dict[str, set[str]]:
    """The ``omr`` result names that count for each feature of ``OMR_FEATURES``.

    ``exact``: the feature's own name. ``substring``: every name of ``result_names`` contained in the feature's name
    (the authors' ``row[3] in result_name``), so ``"BMI"`` counts for ``"BMI (kg/m2)"``.
    """
    if matching not in OMR_NAME_MATCHING:
        raise ValueError(f"omr name matching must be one of {OMR_NAME_MATCHING}, got {matching!r}")
    if matching == "exact":
        return {feature: {feature} for feature in OMR_FEATURES}
    names = {name for name in result_names if isinstance(name, str)}
    return {feature: {name for name in names if name in feature} for feature in OMR_FEATURES}


def read_omr(
    omr_path: Path, subjects: np.ndarray, chunk_rows: int = 1_000_000, omr_names: str = "exact"
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Read the used ``omr`` records of ``subjects``, one table per feature, averaged per (subject, chart day).

    Args:
        omr_path: MIMIC-IV ``hosp/omr`` (``.csv`` or ``.csv.gz``).
        subjects: subject IDs that have images; records of other subjects are dropped while reading.
        chunk_rows: rows parsed at a time; bounds the memory used by the text columns.
        omr_names: ``exact`` or ``substring`` matching of result names (``feature_aliases``).

    Returns:
        result name -> frame with ``subject_id``, day number and the feature's column(s), sorted by subject and day;
        and result name -> how many used values were not numbers (left out, so missing unless another record is
        near), for the features that had any. Each such feature is logged with its count, one value and its line.
    """
    columns = (layout.SUBJECT_ID, layout.CHARTDATE, layout.RESULT_NAME, layout.RESULT_VALUE)
    require_columns(omr_path, read_header(omr_path), columns)
    names = list(OMR_FEATURES)
    feature_aliases([], omr_names)  # reject an unknown matching before reading millions of rows
    collected: dict[str, list[pd.DataFrame]] = {name: [] for name in names}
    rows_read = rows_kept = 0
    not_numbers: dict[str, int] = dict.fromkeys(names, 0)
    examples: dict[str, str] = {}
    reader = pd.read_csv(
        omr_path,
        usecols=list(columns),
        dtype={layout.CHARTDATE: str, layout.RESULT_NAME: "category", layout.RESULT_VALUE: str},
        keep_default_na=False,  # a value such as "n/a" or "NA" is logged as written, not as a missing cell
        na_values={layout.SUBJECT_ID: [""], layout.CHARTDATE: [""], layout.RESULT_NAME: [""]},
        chunksize=chunk_rows,
    )
    with reader:
        for number, chunk in enumerate(reader, start=1):
            rows_read += len(chunk)
            subject = integer_ids(chunk[layout.SUBJECT_ID], omr_path, layout.SUBJECT_ID)
            aliases = feature_aliases(chunk[layout.RESULT_NAME].cat.categories, omr_names)
            used = set().union(*aliases.values())
            kept = chunk[chunk[layout.RESULT_NAME].isin(used).to_numpy() & subject.isin(subjects).to_numpy()]
            days = pd.Series(
                day_numbers(kept[layout.CHARTDATE], layout.CHARTDATE_FORMAT, omr_path, layout.CHARTDATE),
                index=kept.index,
            )
            for name in names:
                rows = kept[layout.RESULT_NAME].isin(aliases[name])
                values = _parse_values(name, kept.loc[rows, layout.RESULT_VALUE])
                complete = values.notna().all(axis=1)
                if not complete.all():
                    not_numbers[name] += int((~complete).sum())
                    text = kept.loc[rows, layout.RESULT_VALUE]
                    position = int(np.flatnonzero(~complete.to_numpy())[0])
                    examples.setdefault(name, f"line {line_number(text, position)}: {shown(text.iloc[position])}")
                values.insert(0, _DAY, days.loc[values.index])
                values.insert(0, layout.SUBJECT_ID, subject.loc[values.index])
                collected[name].append(values[complete])
            rows_kept += len(kept)
            progress(f"step1: {omr_path.name} chunk {number}: {rows_read:,} rows read, {rows_kept:,} kept")
    counted = {name: count for name, count in not_numbers.items() if count}
    for name, count in counted.items():
        shape = " ('systolic/diastolic')" if len(OMR_FEATURES[name]) == 2 else ""
        progress(
            f"step1: {omr_path.name}: {count:,} {name!r} values are not numbers{shape}, left out (missing); "
            f"e.g. {examples[name]}"
        )
    records = {
        name: pd.concat(frames, ignore_index=True).groupby([layout.SUBJECT_ID, _DAY], sort=True).mean().reset_index()
        for name, frames in collected.items()
    }
    return records, counted


def nearest_records(
    images: pd.DataFrame, records: pd.DataFrame, value_columns: tuple[str, ...], window_days: int
) -> pd.DataFrame:
    """Values of each image's nearest record within ±``window_days``; equidistant records are averaged.

    Args:
        images: ``subject_id`` and day number per image, sorted by day.
        records: ``subject_id``, day number and ``value_columns``, one row per (subject, day), sorted by day.
        value_columns: columns of ``records`` to return.
        window_days: largest accepted |study day - chart day|.

    Returns:
        ``value_columns`` aligned with ``images``' rows; NaN where no record lies in the window.
    """
    right = records.assign(**{_RECORD_DAY: records[_DAY].astype(np.float64)})
    left = images[[layout.SUBJECT_ID, _DAY]]
    matches = {
        direction: pd.merge_asof(left, right, on=_DAY, by=layout.SUBJECT_ID, direction=direction, tolerance=window_days)
        for direction in ("backward", "forward")
    }
    day = left[_DAY].to_numpy(dtype=np.float64)
    gap_before = np.nan_to_num(day - matches["backward"][_RECORD_DAY].to_numpy(), nan=np.inf)
    gap_after = np.nan_to_num(matches["forward"][_RECORD_DAY].to_numpy() - day, nan=np.inf)
    nearer = [gap_before < gap_after, gap_after < gap_before]
    result = {}
    for column in value_columns:
        before = matches["backward"][column].to_numpy()
        after = matches["forward"][column].to_numpy()
        result[column] = np.select(nearer, [before, after], default=(before + after) / 2)
    return pd.DataFrame(result, index=images.index)


def image_ehr(images: pd.DataFrame, records: dict[str, pd.DataFrame], window_days: int) -> pd.DataFrame:
    """``dicom_id`` and every EHR column for ``images`` (the output of :func:`read_images`), in their order."""
    by_day = images.sort_values(_DAY, kind="stable")
    low, high = by_day[layout.SUBJECT_ID].min(), by_day[layout.SUBJECT_ID].max()
    output = images[[layout.DICOM_ID]].copy()
    for name, columns in OMR_FEATURES.items():
        table = records[name]
        subjects = table[layout.SUBJECT_ID].to_numpy()
        start, stop = np.searchsorted(subjects, low, side="left"), np.searchsorted(subjects, high, side="right")
        subset = table.iloc[start:stop].sort_values(_DAY, kind="stable")
        values = nearest_records(by_day, subset, columns, window_days).reindex(images.index)
        for column in columns:
            output[column] = values[column].to_numpy()
    return output[[layout.DICOM_ID, *schema.MIMIC_EHR_COLUMNS]]


def _clear_previous_run(parts_dir: Path) -> None:
    """Remove the manifest first, then old parts: from here on step 2 refuses to run until this run completes."""
    (parts_dir / layout.MANIFEST).unlink(missing_ok=True)
    for part in parts_dir.glob(_PART_PATTERN):
        part.unlink()


def run(
    mimic_cxr: Path,
    mimic_iv: Path,
    work_dir: Path,
    window_days: int = 90,
    part_images: int = 50_000,
    chunk_rows: int = 1_000_000,
    omr_names: str = "exact",
) -> Path:
    """Join every image with its nearest ``omr`` records and write the parts and their manifest.

    Args:
        mimic_cxr: MIMIC-CXR-JPG root (holds ``mimic-cxr-2.0.0-metadata.csv.gz``).
        mimic_iv: MIMIC-IV root (holds ``hosp/omr.csv.gz``), or its ``hosp`` folder.
        work_dir: folder for intermediate files (created if needed).
        window_days: largest accepted distance between study date and chart date.
        part_images: images per part file.
        chunk_rows: ``omr`` rows parsed at a time.
        omr_names: ``exact`` or the authors' ``substring`` matching of ``omr`` result names.

    Returns:
        the manifest path.
    """
    if window_days < 0 or part_images < 1 or chunk_rows < 1:
        raise ValueError(
            f"need window_days >= 0, part_images >= 1, chunk_rows >= 1; got {window_days}, {part_images}, {chunk_rows}"
        )
    parts_dir = Path(work_dir) / layout.PARTS_DIR
    parts_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous_run(parts_dir)
    metadata_path = layout.mimic_cxr_table(mimic_cxr, layout.METADATA)
    omr_path = layout.mimic_iv_table(mimic_iv, layout.OMR)
    images = read_images(metadata_path).sort_values([layout.SUBJECT_ID, layout.DICOM_ID], ignore_index=True)
    progress(f"step1: {len(images):,} images of {images[layout.SUBJECT_ID].nunique():,} subjects in {metadata_path}")
    records, not_numbers = read_omr(omr_path, images[layout.SUBJECT_ID].unique(), chunk_rows, omr_names)
    parts = []
    count = -(-len(images) // part_images)
    for index in range(count):
        ehr = image_ehr(images.iloc[index * part_images : (index + 1) * part_images], records, window_days)
        name = f"part-{index:05d}.csv"
        write_csv_atomic(ehr, parts_dir / name)
        parts.append({"file": name, "rows": len(ehr)})
        progress(f"step1: part {index + 1}/{count} written ({len(ehr):,} images)")
    manifest = {
        "images": len(images),
        "window_days": window_days,
        "omr_names": omr_names,
        "metadata": str(metadata_path),
        "omr": str(omr_path),
        "omr_values_not_numbers": not_numbers,
        "parts": parts,
    }
    return write_json_atomic(manifest, parts_dir / layout.MANIFEST)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Step 1 options, shared with ``run_all``."""
    parser.add_argument("--window-days", type=int, default=90, help="largest |study date - chart date| in days")
    parser.add_argument("--part-images", type=int, default=50_000, help="images per intermediate part file")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="omr rows parsed at a time")
    parser.add_argument(
        "--omr-names",
        choices=OMR_NAME_MATCHING,
        default="exact",
        help="match omr result names exactly, or by the authors' substring test (adds the unit-less "
        "'BMI', 'Height', 'Weight' records)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-cxr", type=Path, required=True, help="MIMIC-CXR-JPG 2.0.0 root")
    parser.add_argument("--mimic-iv", type=Path, required=True, help="MIMIC-IV 3.1 root (holding hosp/)")
    parser.add_argument("--work-dir", type=Path, required=True, help="folder for intermediate files")
    add_arguments(parser)
    args = parser.parse_args(argv)
    with exit_on_input_error():
        run(
            args.mimic_cxr,
            args.mimic_iv,
            args.work_dir,
            args.window_days,
            args.part_images,
            args.chunk_rows,
            args.omr_names,
        )


if __name__ == "__main__":
    main()
