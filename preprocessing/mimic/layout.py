"""File and column names of MIMIC-CXR-JPG 2.0.0 and MIMIC-IV 3.1, and the files the five steps hand on.

Keeping every external name here means a new MIMIC release is a change to one file, and every step reads its
predecessor's output from the same place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..common import resolve_table

__all__ = [
    "SUBJECT_ID",
    "STUDY_ID",
    "DICOM_ID",
    "STUDY_DATE",
    "VIEW_POSITION",
    "OFFICIAL_SPLIT",
    "OFFICIAL_SPLIT_NAMES",
    "STUDY_DATE_FORMAT",
    "CHARTDATE",
    "CHARTDATE_FORMAT",
    "RESULT_NAME",
    "RESULT_VALUE",
    "GENDER",
    "GENDERS",
    "ANCHOR_AGE",
    "ANCHOR_YEAR",
    "METADATA",
    "LABELS",
    "SPLIT_TABLE",
    "OMR",
    "PATIENTS",
    "PARTS_DIR",
    "MANIFEST",
    "IMAGE_EHR",
    "JOINED",
    "EXISTING",
    "mimic_cxr_table",
    "mimic_iv_table",
    "image_paths",
]

SUBJECT_ID = "subject_id"
STUDY_ID = "study_id"
DICOM_ID = "dicom_id"
#: ``mimic-cxr-2.0.0-metadata``: study date as an integer ``YYYYMMDD`` and the acquisition view (AP, PA, LATERAL...).
STUDY_DATE = "StudyDate"
STUDY_DATE_FORMAT = "%Y%m%d"
VIEW_POSITION = "ViewPosition"
#: ``mimic-cxr-2.0.0-split``: official patient-level split, mapped onto the output split names.
OFFICIAL_SPLIT = "split"
OFFICIAL_SPLIT_NAMES = {"train": "train", "validate": "valid", "test": "test"}

#: MIMIC-IV ``hosp/omr``: one measurement per row, value as text (``"120/80"`` for blood pressure).
CHARTDATE = "chartdate"
CHARTDATE_FORMAT = "%Y-%m-%d"
RESULT_NAME = "result_name"
RESULT_VALUE = "result_value"
#: MIMIC-IV ``hosp/patients``.
GENDER = "gender"
#: The codes MIMIC-IV writes in ``gender`` (read with ``schema.canonical_sex``, like every sex in the project).
GENDERS = ("M", "F")
ANCHOR_AGE = "anchor_age"
ANCHOR_YEAR = "anchor_year"

METADATA = "mimic-cxr-2.0.0-metadata"
LABELS = "mimic-cxr-2.0.0-chexpert"
SPLIT_TABLE = "mimic-cxr-2.0.0-split"
OMR = "omr"
PATIENTS = "patients"

#: Step outputs inside the work folder: step 1 writes parts + manifest, step 2 ``IMAGE_EHR``, step 3 ``JOINED``,
#: step 4 ``EXISTING``; step 5 writes the final CSVs into the output folder.
PARTS_DIR = "ehr_parts"
MANIFEST = "manifest.json"
IMAGE_EHR = "image_ehr.csv"
JOINED = "joined.csv"
EXISTING = "existing.csv"


def mimic_cxr_table(mimic_cxr: Path, stem: str) -> Path:
    """A MIMIC-CXR-JPG table (``.csv.gz`` or ``.csv``) in the dataset root."""
    return resolve_table([Path(mimic_cxr)], stem)


def mimic_iv_table(mimic_iv: Path, stem: str) -> Path:
    """A MIMIC-IV ``hosp`` table; ``mimic_iv`` may be the release root (holding ``hosp/``) or ``hosp`` itself."""
    return resolve_table([Path(mimic_iv) / "hosp", Path(mimic_iv)], stem)


def image_paths(subject_ids: pd.Series, study_ids: pd.Series, dicom_ids: pd.Series) -> pd.Series:
    """JPEG paths relative to the MIMIC-CXR-JPG root: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    subjects = subject_ids.astype(str)
    return "files/p" + subjects.str[:2] + "/p" + subjects + "/s" + study_ids.astype(str) + "/" + dicom_ids + ".jpg"
