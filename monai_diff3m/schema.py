"""Column names and categorical vocabularies of the dataset CSVs: the one source of truth.

Every reader (CheXpert, MIMIC, DICOM folders, phantoms) writes and every transform reads these names, so a CSV
produced by ``preprocessing/`` or by the phantom generator loads into the bundles without renaming.
The layout follows CheXpert's ``train.csv`` (``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding``) and adds
the MIMIC-IV ``omr`` measurements in their native units. The module lies outside ``data`` and ``transforms``
because both read it (so do ``metrics``, ``handlers`` and ``preprocessing``): neither imports the other for it.
"""

from __future__ import annotations

import math
import re
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
#: Which row of the EHR CSV an image was scored with (``row 3: images/test/x.png``), a column of ``scores.csv``.
EHR_ROW = "EHR row"

SEX_VALUES = ("Male", "Female")
VIEW_VALUES = ("AP", "PA")
FRONTAL = "Frontal"
LATERAL = "Lateral"

#: Accepted spellings of each sex (compared upper-case after stripping spaces), the same for CSV cells and the
#: DICOM ``PatientSex`` tag. ``O`` (DICOM's "other"), ``Other`` and ``Unknown`` have no slot: they are missing.
SEX_SPELLINGS = {"M": "Male", "MALE": "Male", "F": "Female", "FEMALE": "Female"}
SEX_MISSING_SPELLINGS = ("O", "OTHER", "U", "UNKNOWN")
#: Patient positions that may follow AP/PA without changing the projection (``AP SUPINE``, ``PA_ERECT``).
VIEW_POSITION_QUALIFIERS = (
    "SUPINE",
    "ERECT",
    "SEMI-ERECT",
    "SEMIERECT",
    "UPRIGHT",
    "SITTING",
    "STANDING",
    "PORTABLE",
    "MOBILE",
    "HORIZONTAL",
)
#: Lateral and decubitus codes (CheXpert ``AP/PA``, DICOM ``ViewPosition``): Diff3M is frontal-only.
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")

BMI = "BMI"
SYSTOLIC = "Systolic BP"
DIASTOLIC = "Diastolic BP"
HEIGHT = "Height"
WEIGHT = "Weight"
#: MIMIC-IV ``omr`` measurements in omr's own units: kg/m2, mmHg, mmHg, inches, lbs.
MIMIC_EHR_COLUMNS = (BMI, SYSTOLIC, DIASTOLIC, HEIGHT, WEIGHT)

REQUIRED_COLUMNS = (PATH, SEX, AGE, VIEW)
#: The EHR every dataset has (the ``demographics`` group), and with MIMIC's measurements every EHR column.
DEMOGRAPHIC_COLUMNS = (SEX, AGE, VIEW)
EHR_COLUMNS = (*DEMOGRAPHIC_COLUMNS, *MIMIC_EHR_COLUMNS)
#: The columns every dataset CSV has, in the order the writers put them (MIMIC appends ``MIMIC_EHR_COLUMNS``).
CSV_COLUMNS = (PATH, PATIENT_ID, SEX, AGE, FRONTAL_LATERAL, VIEW, NO_FINDING)


def is_missing(value: Any) -> bool:
    """None, NaN or a blank string: a cell or tag without a value."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def canonical_sex(value: Any, field: str = SEX) -> str | None:
    """``Male``/``Female`` from any spelling of :data:`SEX_SPELLINGS` (case and surrounding spaces ignored); None
    for a missing value or one of :data:`SEX_MISSING_SPELLINGS`. The one sex vocabulary of CSV and DICOM readers.

    Raises:
        ValueError: any other value; the message names ``field`` and the value.
    """
    if is_missing(value):
        return None
    text = str(value).strip().upper()
    if text in SEX_SPELLINGS:
        return SEX_SPELLINGS[text]
    if text in SEX_MISSING_SPELLINGS:
        return None
    raise ValueError(
        f"{field} {value!r} is not a sex: expected Male/M or Female/F (any case), or O/Other/Unknown/empty for missing"
    )


def canonical_view(value: Any, field: str = VIEW) -> str | None:
    """``AP``/``PA`` from a frontal view code (case and spaces ignored), optionally followed by a patient position
    of :data:`VIEW_POSITION_QUALIFIERS` (``AP Supine``, ``PA_ERECT``); None when missing. The one view vocabulary of
    CSV and DICOM readers.

    Raises:
        ValueError: a lateral or decubitus view (Diff3M is frontal-only) or an unknown code, naming ``field``.
    """
    if is_missing(value):
        return None
    words = re.split(r"[\s_]+", str(value).strip().upper())
    if any(word in LATERAL_VIEWS for word in words):
        raise ValueError(
            f"{field} {value!r} is a lateral view: lateral views are not supported, Diff3M is frontal-only "
            f"(expected one of {VIEW_VALUES})"
        )
    if words[0] in VIEW_VALUES and all(word in VIEW_POSITION_QUALIFIERS for word in words[1:]):
        return words[0]
    raise ValueError(
        f"{field} {value!r} is not a frontal view: expected one of {VIEW_VALUES} (any case, optionally followed by a "
        f"patient position such as 'AP Supine') or empty"
    )


def canonical_frontal_lateral(value: Any, field: str = FRONTAL_LATERAL) -> str | None:
    """``Frontal``/``Lateral`` whatever the case and surrounding spaces (``frontal``), None when missing.

    Raises:
        ValueError: any other value, naming ``field``.
    """
    if is_missing(value):
        return None
    text = str(value).strip().capitalize()
    if text in (FRONTAL, LATERAL):
        return text
    raise ValueError(f"{field} {value!r} is neither {FRONTAL!r} nor {LATERAL!r} (any case) nor empty")


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

#: Plausible range of every numeric EHR field, in its CSV unit (MIMIC-IV ``omr``: kg/m2, mmHg, inches, lbs), wide
#: enough for children and extreme adults. A value outside is a data-entry error (BMI 2500, Height 1e9, a height in
#: cm): refused with its record and field named, never encoded or fitted into the statistics.
PLAUSIBLE_RANGES = {
    AGE: (0.0, MAX_AGE_YEARS),
    BMI: (5.0, 150.0),
    SYSTOLIC: (40.0, 300.0),
    DIASTOLIC: (10.0, 200.0),
    HEIGHT: (10.0, 110.0),
    WEIGHT: (1.0, 1500.0),
}
UNITS = {AGE: "years", BMI: "kg/m2", SYSTOLIC: "mmHg", DIASTOLIC: "mmHg", HEIGHT: "inches", WEIGHT: "lbs"}


def implausible(column: str, value: float) -> str | None:
    """Why ``value`` cannot be a ``column`` (``"BMI 2500 is outside the plausible range [5, 150] kg/m2"``), or None."""
    low, high = PLAUSIBLE_RANGES[column]
    if low <= value <= high:
        return None
    return f"{column} {value:g} is outside the plausible range [{low:g}, {high:g}] {UNITS[column]}"


#: Age bands used for subgroup evaluation: (label, lower bound inclusive, upper bound exclusive).
AGE_BANDS = (("<40", 0.0, 40.0), ("40-60", 40.0, 60.0), ("60-80", 60.0, 80.0), (">=80", 80.0, float("inf")))


def age_band(age: float) -> str:
    """Return the label of the age band that contains ``age``."""
    for label, low, high in AGE_BANDS:
        if low <= age < high:
            return label
    raise ValueError(f"age {age!r} is outside every age band {[label for label, _, _ in AGE_BANDS]}")
