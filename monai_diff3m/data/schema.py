"""Column names and categorical vocabularies of the dataset CSVs: the one source of truth.

Every reader (CheXpert, MIMIC, DICOM folders, phantoms) writes and every transform reads these names, so a CSV
produced by ``preprocessing/`` or by the phantom generator loads into the bundles without renaming.
The layout follows CheXpert's ``train.csv`` (``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding``) and adds
the MIMIC-IV ``omr`` measurements in their native units.
"""

from __future__ import annotations

import math
from typing import Any

PATH = "Path"
SEX = "Sex"
AGE = "Age"
FRONTAL_LATERAL = "Frontal/Lateral"
VIEW = "AP/PA"
NO_FINDING = "No Finding"
PATIENT_ID = "Patient"
MASK = "Mask"
LESION = "Lesion"

SEX_VALUES = ("Male", "Female")
VIEW_VALUES = ("AP", "PA")
FRONTAL = "Frontal"

BMI = "BMI"
SYSTOLIC = "Systolic BP"
DIASTOLIC = "Diastolic BP"
HEIGHT = "Height"
WEIGHT = "Weight"
#: MIMIC-IV ``omr`` measurements in omr's own units: kg/m2, mmHg, mmHg, inches, lbs.
MIMIC_EHR_COLUMNS = (BMI, SYSTOLIC, DIASTOLIC, HEIGHT, WEIGHT)

REQUIRED_COLUMNS = (PATH, SEX, AGE, VIEW)


def anomaly_label(no_finding: Any) -> int:
    """1 (abnormal) or 0 (normal) from a ``No Finding`` cell: CheXpert writes 1 for normals and leaves the cell
    blank for every other study, so blank and 0 are abnormal. Any other value raises ``ValueError``.

    The one rule for labels: the dataset reader, the evaluation metrics and the studies all call it.
    """
    if no_finding is None or (isinstance(no_finding, str) and not no_finding.strip()):
        return 1
    try:
        value = float(no_finding)
    except (TypeError, ValueError):
        value = math.inf
    if math.isnan(value):
        return 1
    if value not in (0.0, 1.0):
        raise ValueError(f"column {NO_FINDING!r} must be 1 (normal), 0 or blank (abnormal), got {no_finding!r}")
    return 0 if value == 1.0 else 1

#: Oldest plausible age in years; larger values are data-entry errors, rejected rather than silently encoded.
MAX_AGE_YEARS = 120.0

#: Age bands used for subgroup evaluation: (label, lower bound inclusive, upper bound exclusive).
AGE_BANDS = (("<40", 0.0, 40.0), ("40-60", 40.0, 60.0), ("60-80", 60.0, 80.0), (">=80", 80.0, float("inf")))


def age_band(age: float) -> str:
    """Return the label of the age band that contains ``age``."""
    for label, low, high in AGE_BANDS:
        if low <= age < high:
            return label
    raise ValueError(f"age {age!r} is outside every age band {[label for label, _, _ in AGE_BANDS]}")
