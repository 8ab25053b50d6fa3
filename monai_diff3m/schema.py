"""Column names and categorical vocabularies of the dataset CSVs: the one source of truth.

Every reader (CheXpert, MIMIC, DICOM folders, phantoms) writes and every transform reads these names, so a CSV
produced by ``preprocessing/`` or by the phantom generator loads into the bundles without renaming.
The layout follows CheXpert's ``train.csv`` (``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding``) and adds
the MIMIC-IV ``omr`` measurements in their native units. The module lies outside ``data`` and ``transforms``
because both read it (so do ``metrics``, ``handlers`` and ``preprocessing``): neither imports the other for it.

Each EHR field is one :class:`EHRField` entry of :data:`EHR_FIELDS`: its group, vocabulary, normaliser, plausible
range, unit, DICOM tag and MIMIC-IV ``omr`` source. The encoder (``EncodeEHRd``), the statistics, the slot names and
so the network's token count, the CSV and DICOM readers, the EHR-only baseline, the phantoms and the MIMIC pipeline
all read the table, so adding a field is one entry here. ``bundles/diff3m/configs/metadata.json`` is static JSON: a
test names the ``num_channels`` and field list it must then state. A model trained before a field joined one of its
groups is refused at loading, by name.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

FRONTAL = "Frontal"
LATERAL = "Lateral"
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

REQUIRED_COLUMNS = (PATH, SEX, AGE, VIEW)
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
    """``Male``/``Female`` from any spelling the table accepts (``M``, ``female``; case and surrounding spaces
    ignored); None for a missing value or a missing spelling (``O``, ``Other``, ``Unknown``). The one sex vocabulary
    of CSV and DICOM readers.

    Raises:
        ValueError: any other value; the message names ``field`` and the value.
    """
    return ehr_field(SEX).canonical(value, field)


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

# ------------------------------------------------------------------------------------------- the EHR field table

#: Normalisers of a numeric field: ``age_range`` maps (value - low)/(high - low) with ``EncodeEHRd``'s
#: ``age_range``; ``zscore`` standardises with the training split's statistics (``EHRStatistics``).
NORMALISERS = ("age_range", "zscore")


@dataclass(frozen=True)
class OmrSource:
    """Where the MIMIC pipeline reads a field: a MIMIC-IV ``hosp/omr`` ``result_name`` and, for a
    ``"systolic/diastolic"`` text such as blood pressure, which half (0 or 1); ``None`` when the text is one number."""

    result_name: str
    part: int | None = None


@dataclass(frozen=True)
class EHRField:
    """One EHR field: everything the readers, the encoder, the statistics, the network size, the EHR-only baseline,
    the phantoms and the MIMIC pipeline need to know about it. Adding a field to :data:`EHR_FIELDS` is the one edit
    that adds it everywhere.

    Args:
        name: the CSV column and record key.
        group: the token group it belongs to (``demographics``: every dataset; ``measurements``: MIMIC-IV ``omr``).
            The network attends over each group's tokens separately; a new name makes a new group.
        categories: a categorical field's canonical values, one one-hot slot each, in slot order; empty for a
            numeric field (one slot).
        spellings: a categorical field's accepted spellings (upper-case, e.g. ``{"M": "Male"}``) beside the
            categories themselves (any case).
        missing_spellings: spellings that mean "unknown" and encode as missing (DICOM's ``O`` for sex).
        reader: a categorical reader ``(value, where) -> category | None`` that replaces the spelling table, for
            vocabularies a table cannot say (a view code followed by a patient position, lateral views refused).
        normaliser: a numeric field's encoding, one of :data:`NORMALISERS`.
        plausible_range: a numeric field's (low, high) in ``unit``; a value outside is refused as a data-entry error.
        unit: a numeric field's unit in the CSV.
        dicom_tag: the DICOM keyword the DICOM folder reader takes the field from (``None``: not in DICOM headers);
            an ``AS`` tag is read as an age in years, other numeric tags as numbers, categorical ones by the reader.
        omr: the MIMIC-IV ``omr`` record the MIMIC pipeline fills it from (``None``: not an ``omr`` measurement).
    """

    name: str
    group: str
    categories: tuple[str, ...] = ()
    spellings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    missing_spellings: tuple[str, ...] = ()
    reader: Callable[[Any, str], str | None] | None = None
    normaliser: str = "zscore"
    plausible_range: tuple[float, float] | None = None
    unit: str = ""
    dicom_tag: str | None = None
    omr: OmrSource | None = None

    def __post_init__(self) -> None:
        if self.categories:
            unknown = sorted(set(self.spellings.values()) - set(self.categories))
            if unknown:
                raise ValueError(f"EHR field {self.name!r}: spellings map to {unknown}, not to {self.categories}")
        elif self.normaliser not in NORMALISERS or self.plausible_range is None or not self.unit:
            raise ValueError(
                f"numeric EHR field {self.name!r} needs a normaliser of {NORMALISERS}, a plausible_range and a unit"
            )

    @property
    def is_categorical(self) -> bool:
        return bool(self.categories)

    @property
    def slots(self) -> tuple[str, ...]:
        """Token names: ``Sex=Male``, ``Sex=Female`` for a categorical field, the column name for a numeric one."""
        return tuple(f"{self.name}={category}" for category in self.categories) if self.categories else (self.name,)

    def canonical(self, value: Any, where: str | None = None) -> str | None:
        """A categorical value in the field's vocabulary (case and surrounding spaces ignored), None when missing.

        Raises:
            ValueError: a value outside the vocabulary; the message names ``where`` (default: the column) and value.
        """
        where = self.name if where is None else where
        if self.reader is not None:
            return self.reader(value, where)
        if is_missing(value):
            return None
        text = str(value).strip().upper()
        accepted = {**{category.upper(): category for category in self.categories}, **self.spellings}
        if text in accepted:
            return accepted[text]
        if text in self.missing_spellings:
            return None
        options = " or ".join(
            "/".join([category, *(s for s, c in self.spellings.items() if c == category and s != category.upper())])
            for category in self.categories
        )
        unknown = "/".join(s if len(s) == 1 else s.capitalize() for s in self.missing_spellings)
        raise ValueError(
            f"{where} {value!r} is not a {self.name.lower()}: expected {options} (any case), "
            f"or {unknown + '/' if unknown else ''}empty for missing"
        )

    def implausible(self, value: float) -> str | None:
        """Why ``value`` cannot be this numeric field (``"BMI 2500 is outside the plausible range [5, 150] kg/m2"``)."""
        assert self.plausible_range is not None
        low, high = self.plausible_range
        if low <= value <= high:
            return None
        return f"{self.name} {value:g} is outside the plausible range [{low:g}, {high:g}] {self.unit}"


#: Every EHR field, in token order within each group. Units follow MIMIC-IV ``omr`` (kg/m2, mmHg, inches, lbs);
#: plausible ranges are wide enough for children and extreme adults, so a value outside (BMI 2500, Height 1e9, a
#: height in cm) is a data-entry error, refused with its record and field named, never encoded or fitted.
EHR_FIELDS: tuple[EHRField, ...] = (
    EHRField(
        AGE, "demographics", normaliser="age_range", plausible_range=(0.0, MAX_AGE_YEARS), unit="years",
        dicom_tag="PatientAge",
    ),
    EHRField(
        SEX, "demographics", categories=("Male", "Female"),
        spellings={"M": "Male", "MALE": "Male", "F": "Female", "FEMALE": "Female"},
        missing_spellings=("O", "OTHER", "U", "UNKNOWN"), dicom_tag="PatientSex",
    ),
    EHRField(VIEW, "demographics", categories=("AP", "PA"), reader=canonical_view, dicom_tag="ViewPosition"),
    EHRField(BMI, "measurements", plausible_range=(5.0, 150.0), unit="kg/m2", omr=OmrSource("BMI (kg/m2)")),
    EHRField(SYSTOLIC, "measurements", plausible_range=(40.0, 300.0), unit="mmHg", omr=OmrSource("Blood Pressure", 0)),
    EHRField(DIASTOLIC, "measurements", plausible_range=(10.0, 200.0), unit="mmHg", omr=OmrSource("Blood Pressure", 1)),
    EHRField(HEIGHT, "measurements", plausible_range=(10.0, 110.0), unit="inches", omr=OmrSource("Height (Inches)")),
    EHRField(WEIGHT, "measurements", plausible_range=(1.0, 1500.0), unit="lbs", omr=OmrSource("Weight (Lbs)")),
)  # fmt: skip


def ehr_groups() -> tuple[str, ...]:
    """The token groups of :data:`EHR_FIELDS`, in table order."""
    return tuple(dict.fromkeys(field.group for field in EHR_FIELDS))


def ehr_fields(groups: Sequence[str] | None = None) -> tuple[EHRField, ...]:
    """The fields of ``groups`` (default: all), group by group in the order given, each in table (token) order.

    Raises:
        ValueError: ``groups`` is empty or names a group no field has.
    """
    if groups is None:
        return EHR_FIELDS
    known = ehr_groups()
    if not groups or any(group not in known for group in groups):
        raise ValueError(f"EHR groups must be a non-empty subset of {list(known)}, got {list(groups)}")
    return tuple(field for group in groups for field in EHR_FIELDS if field.group == group)


def ehr_field(name: str) -> EHRField:
    """The field of column ``name``; ``KeyError`` naming the known columns otherwise."""
    for candidate in EHR_FIELDS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"{name!r} is not an EHR field; the fields are {[field.name for field in EHR_FIELDS]}")


def ehr_columns(groups: Sequence[str] | None = None) -> tuple[str, ...]:
    """The columns of ``groups`` (default: all) in the order the CSV writers put them: those of
    :data:`CSV_COLUMNS` (sex, age, view) first, then the rest in table order (MIMIC's measurements)."""
    names = [field.name for field in ehr_fields(groups)]
    return (
        *(column for column in CSV_COLUMNS if column in names),
        *(name for name in names if name not in CSV_COLUMNS),
    )


def omr_sources() -> dict[str, tuple[str, ...]]:
    """Every ``omr`` result name the MIMIC pipeline reads, and the column(s) it fills in part order."""
    sources: dict[str, list[EHRField]] = {}
    for candidate in EHR_FIELDS:
        if candidate.omr is not None:
            sources.setdefault(candidate.omr.result_name, []).append(candidate)
    return {
        name: tuple(field.name for field in sorted(fields, key=lambda field: field.omr.part or 0))  # type: ignore[union-attr]
        for name, fields in sources.items()
    }


def implausible(column: str, value: float) -> str | None:
    """Why ``value`` cannot be a ``column`` (``"BMI 2500 is outside the plausible range [5, 150] kg/m2"``), or None."""
    return ehr_field(column).implausible(value)


#: Vocabularies, column lists and ranges of the table above (derived: edit :data:`EHR_FIELDS`, not these). They
#: are taken when the module is imported; code that must follow a table extended at run time calls the functions.
SEX_VALUES = ehr_field(SEX).categories
VIEW_VALUES = ehr_field(VIEW).categories
SEX_SPELLINGS = dict(ehr_field(SEX).spellings)
SEX_MISSING_SPELLINGS = ehr_field(SEX).missing_spellings
#: The EHR every dataset has (the ``demographics`` group), MIMIC-IV ``omr``'s measurements, and every EHR column.
DEMOGRAPHIC_COLUMNS = ehr_columns(["demographics"])
MIMIC_EHR_COLUMNS = ehr_columns(["measurements"])
EHR_COLUMNS = ehr_columns()
PLAUSIBLE_RANGES = {field.name: field.plausible_range for field in EHR_FIELDS if field.plausible_range is not None}
UNITS = {field.name: field.unit for field in EHR_FIELDS if field.unit}


#: Age bands used for subgroup evaluation: (label, lower bound inclusive, upper bound exclusive).
AGE_BANDS = (("<40", 0.0, 40.0), ("40-60", 40.0, 60.0), ("60-80", 60.0, 80.0), (">=80", 80.0, float("inf")))


def age_band(age: float) -> str:
    """Return the label of the age band that contains ``age``."""
    for label, low, high in AGE_BANDS:
        if low <= age < high:
            return label
    raise ValueError(f"age {age!r} is outside every age band {[label for label, _, _ in AGE_BANDS]}")
