"""Synthetic MIMIC-CXR-JPG 2.0.0 and MIMIC-IV 3.1 tables with the real file names, columns and value formats.

MIMIC needs credentialed access, so the benchmark, the tests and anyone trying the pipeline first use these
tables instead. Everything is generated with vectorised numpy, so millions of ``omr`` rows take seconds. The
tables contain what the pipeline must cope with: lateral views, positional blood-pressure variants, unused result
names, ``omr`` subjects without images, several records per day and uncertain labels. No images are written.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import FINDINGS, LABEL_COLUMNS, SUPPORT_DEVICES
from . import layout

__all__ = ["write_synthetic_mimic"]

#: ``omr`` result names and their share of rows; the unused names must be skipped by step 1.
_RESULT_SHARES = {
    "Blood Pressure": 0.33,
    "Weight (Lbs)": 0.25,
    "BMI (kg/m2)": 0.2,
    "Height (Inches)": 0.08,
    "Blood Pressure Sitting": 0.04,
    "Blood Pressure Standing (1 min)": 0.02,
    "eGFR": 0.05,
    "Weight": 0.03,
}
_FIRST_DAY = np.datetime64("2110-01-01", "D").astype(np.int64)
_YEARS_OF_DATA = 8
_VISITS_PER_SUBJECT = 12
_OMR_BLOCK_ROWS = 1_000_000


def _hex_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Unique DICOM-style identifiers such as ``02aac5f3-a6ea5e1a-2a2a3c68-4cb2fe5c-ff5d7d30``."""
    words = rng.integers(0, 2**32, size=(count, 5), dtype=np.uint64)
    words[:, 0] = np.arange(count, dtype=np.uint64)
    parts = [np.char.mod("%08x", words[:, column]) for column in range(5)]
    joined = parts[0]
    for part in parts[1:]:
        joined = np.char.add(np.char.add(joined, "-"), part)
    return joined


def _dates(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]")


def _yyyymmdd(days: np.ndarray) -> np.ndarray:
    dates = _dates(days)
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    months = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return years * 10000 + months * 100 + day_of_month


def _write(frames: Iterable[pd.DataFrame], folder: Path, stem: str, compress: bool) -> Path:
    """Write ``frames`` one after the other into one table, so a large table never exists whole in memory."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.csv.gz" if compress else folder / f"{stem}.csv"
    with gzip.open(path, "wt", compresslevel=1, newline="") if compress else open(path, "w", newline="") as handle:
        for index, frame in enumerate(frames):
            frame.to_csv(handle, index=False, header=index == 0)
    return path


def _cxr_tables(rng: np.random.Generator, subjects: np.ndarray, starts: np.ndarray, images: int) -> dict:
    """Metadata, labels and split: two images per study (frontal + lateral), studies spread over subjects."""
    studies = -(-images // 2)
    study_subject = rng.integers(0, len(subjects), studies)
    study_ids = 50_000_000 + rng.choice(10_000_000, studies, replace=False)
    study_days = starts[study_subject] + rng.integers(0, 365 * _YEARS_OF_DATA, studies)
    image_study = np.arange(images) // 2
    frontal = np.arange(images) % 2 == 0
    views = np.where(
        frontal, rng.choice(["AP", "PA"], images, p=[0.6, 0.4]), rng.choice(["LATERAL", "LL"], images, p=[0.9, 0.1])
    )
    dicom_ids = _hex_ids(rng, images)
    metadata = pd.DataFrame(
        {
            layout.DICOM_ID: dicom_ids,
            layout.SUBJECT_ID: subjects[study_subject[image_study]],
            layout.STUDY_ID: study_ids[image_study],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            layout.VIEW_POSITION: views,
            "Rows": 3056,
            "Columns": 2544,
            layout.STUDY_DATE: _yyyymmdd(study_days[image_study]),
            "StudyTime": rng.uniform(0, 235959, images).round(3),
        }
    )
    normal = rng.random(studies) < 0.35
    labels = {layout.SUBJECT_ID: subjects[study_subject], layout.STUDY_ID: study_ids}
    labels[LABEL_COLUMNS[0]] = np.where(normal, 1.0, np.nan)
    for name in (*FINDINGS, SUPPORT_DEVICES):
        drawn = rng.choice([1.0, 0.0, -1.0, np.nan], studies, p=[0.15, 0.1, 0.05, 0.7])
        labels[name] = np.where(normal & (drawn != 0.0) & (name != SUPPORT_DEVICES), np.nan, drawn)
    subject_split = rng.choice(list(layout.OFFICIAL_SPLIT_NAMES), len(subjects), p=[0.8, 0.1, 0.1])
    split = pd.DataFrame(
        {
            layout.DICOM_ID: dicom_ids,
            layout.STUDY_ID: metadata[layout.STUDY_ID],
            layout.SUBJECT_ID: metadata[layout.SUBJECT_ID],
            layout.OFFICIAL_SPLIT: subject_split[study_subject[image_study]],
        }
    )
    return {layout.METADATA: metadata, layout.LABELS: pd.DataFrame(labels), layout.SPLIT_TABLE: split}


def _omr(rng: np.random.Generator, subjects: np.ndarray, visits: np.ndarray, rows: int) -> pd.DataFrame:
    """``omr`` rows with realistic values in omr's text formats; rows of a subject fall on its few visit days
    (``visits``: subjects x visits day numbers), so one day often holds several records of the same result."""
    owner = rng.integers(0, len(subjects), rows)
    days = visits[owner, rng.integers(0, visits.shape[1], rows)]
    names = np.array(list(_RESULT_SHARES))
    result = names[rng.choice(len(names), rows, p=np.array(list(_RESULT_SHARES.values())))]
    systolic = rng.normal(128, 18, rows).round().astype(np.int64)
    diastolic = rng.normal(76, 11, rows).round().astype(np.int64)
    numbers = {
        "BMI (kg/m2)": rng.normal(28.5, 6.0, rows).round(1),
        "Height (Inches)": rng.normal(66.5, 4.0, rows).round(),
        "Weight (Lbs)": rng.normal(180, 40, rows).round(1),
        "Weight": rng.normal(180, 40, rows).round(1),
        "eGFR": rng.normal(70, 20, rows).round(),
    }
    values = pd.Series(systolic.astype(str), dtype=object)
    blood_pressure = np.char.find(result.astype(str), "Blood Pressure") == 0
    values[blood_pressure] = (
        pd.Series(systolic[blood_pressure]).astype(str) + "/" + pd.Series(diastolic[blood_pressure]).astype(str)
    ).to_numpy()
    for name, column in numbers.items():
        chosen = result == name
        values[chosen] = column[chosen].astype(str)
    return pd.DataFrame(
        {
            layout.SUBJECT_ID: subjects[owner],
            layout.CHARTDATE: np.datetime_as_string(_dates(days)),
            "seq_num": rng.integers(1, 4, rows),
            layout.RESULT_NAME: result,
            layout.RESULT_VALUE: values.to_numpy(),
        }
    )


def write_synthetic_mimic(
    mimic_cxr: Path,
    mimic_iv: Path,
    images: int = 300_000,
    omr_rows: int = 5_000_000,
    seed: int = 0,
    compress: bool = True,
) -> dict[str, Path]:
    """Write the five tables the pipeline reads into a MIMIC-CXR-JPG root and a MIMIC-IV root (``hosp/``).

    Args:
        mimic_cxr: folder receiving the ``mimic-cxr-2.0.0-*`` tables.
        mimic_iv: folder receiving ``hosp/omr`` and ``hosp/patients``.
        images: number of images (half frontal, half lateral); subjects are about ``images / 4.6`` as in MIMIC.
        omr_rows: number of ``omr`` rows, spread over three times as many subjects as have images.
        seed: random seed.
        compress: write ``.csv.gz`` (as PhysioNet distributes them) instead of ``.csv``.

    Returns:
        table stem -> written path.
    """
    if images < 2 or omr_rows < 1:
        raise ValueError(f"need at least 2 images and 1 omr row, got {images} and {omr_rows}")
    rng = np.random.default_rng(seed)
    cxr_subjects = max(1, int(images / 4.6))
    subjects = 10_000_000 + rng.choice(9_000_000, 3 * cxr_subjects, replace=False)
    starts = _FIRST_DAY + rng.integers(0, 365 * 80, len(subjects))
    tables = _cxr_tables(rng, subjects[:cxr_subjects], starts[:cxr_subjects], images)
    anchor_years = (
        starts.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
        + 1970
        + rng.integers(0, 3, len(subjects))
    )
    patients = pd.DataFrame(
        {
            layout.SUBJECT_ID: subjects,
            layout.GENDER: rng.choice(list(layout.GENDERS), len(subjects)),
            layout.ANCHOR_AGE: rng.integers(18, 92, len(subjects)),
            layout.ANCHOR_YEAR: anchor_years,
            "anchor_year_group": "2008 - 2010",
            "dod": np.nan,
        }
    )
    written = {stem: _write([frame], Path(mimic_cxr), stem, compress) for stem, frame in tables.items()}
    hosp = Path(mimic_iv) / "hosp"
    written[layout.PATIENTS] = _write([patients], hosp, layout.PATIENTS, compress)
    blocks = [min(_OMR_BLOCK_ROWS, omr_rows - start) for start in range(0, omr_rows, _OMR_BLOCK_ROWS)]
    visits = starts[:, None] + rng.integers(0, 365 * _YEARS_OF_DATA, (len(subjects), _VISITS_PER_SUBJECT))
    omr = (_omr(rng, subjects, visits, rows) for rows in blocks)
    written[layout.OMR] = _write(omr, hosp, layout.OMR, compress)
    return written
