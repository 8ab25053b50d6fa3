"""EHR records from DICOM tags, for scoring studies that arrive without a dataset CSV.

A DICOM header carries the demographics Diff3M conditions on (PatientAge, PatientSex, ViewPosition), so a folder
of DICOM files can be scored without a CSV. Records use the column names of :mod:`monai_diff3m.schema`, hold
``None`` for a missing value (the EHR encoder gives missing its own embedding), and the folder scan collects
per-file failures instead of stopping, so one broken file in a hospital export does not block the rest. Folders of
PNG/JPEG films with an EHR CSV: :mod:`monai_diff3m.data.image_folder`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from pydicom.datadict import dictionary_VR

from monai_diff3m.data.input_files import Failure, files_under
from monai_diff3m.schema import (
    FRONTAL,
    FRONTAL_LATERAL,
    MAX_AGE_YEARS,
    PATH,
    SEX,
    VIEW,
    EHRField,
    ehr_columns,
    ehr_field,
    is_missing,
)
from monai_diff3m.transforms.image import ImageLoadError, is_dicom_file, read_dicom_dataset

_AGE_PATTERN = re.compile(r"^(\d{1,3})([DWMY]?)$")
_DAYS_PER_YEAR = 365.25
_YEARS_PER_UNIT = {"D": 1.0 / _DAYS_PER_YEAR, "W": 7.0 / _DAYS_PER_YEAR, "M": 1.0 / 12.0, "Y": 1.0, "": 1.0}


class DicomTagError(ValueError):
    """A DICOM tag (or the file holding it) has a value Diff3M cannot use; the message names tag and value."""


def _text(value: object) -> str:
    """Tag value as stripped upper-case text; ``None`` becomes the empty string (DICOM's "no value")."""
    return "" if value is None else str(value).strip().upper()


def parse_dicom_age(value: str | None) -> float | None:
    """PatientAge in years from DICOM AS format ``nnnD/W/M/Y`` (or plain digits meaning years); empty -> None.

    Months, weeks and days are converted to fractional years because the EHR encoder scales age in years.
    """
    text = _text(value)
    if not text:
        return None
    match = _AGE_PATTERN.match(text)
    years = float(match.group(1)) * _YEARS_PER_UNIT[match.group(2)] if match else None
    if years is None or years > MAX_AGE_YEARS:
        raise DicomTagError(
            f"PatientAge {value!r} is not a DICOM age string: expected nnnD, nnnW, nnnM or nnnY "
            f"(e.g. '067Y') or plain years, at most {MAX_AGE_YEARS:g} years"
        )
    return years


def parse_dicom_sex(value: str | None) -> str | None:
    """PatientSex as the schema's sex vocabulary (:func:`~monai_diff3m.schema.canonical_sex`, shared with CSVs):
    ``M``/``F`` in any case; ``O`` or empty is an explicitly missing value."""
    return _dicom_category(ehr_field(SEX), value)


def parse_view_position(value: str | None) -> str | None:
    """ViewPosition as the schema's view vocabulary (:func:`~monai_diff3m.schema.canonical_view`, shared with
    CSVs): ``AP``/``PA`` in any case, optionally with a position (``AP SUPINE``); empty -> None; lateral rejected."""
    return _dicom_category(ehr_field(VIEW), value)


def read_dicom_tag(field: EHRField, value: object) -> str | float | None:
    """The value of ``field`` from its DICOM tag (``field.dicom_tag``): a categorical field in the schema's
    vocabulary, an age string (VR ``AS``) in years, any other numeric tag as a number; empty -> None.

    Raises:
        DicomTagError: a value the field does not accept; the message names the tag.
    """
    if field.is_categorical:
        return _dicom_category(field, value)
    tag = str(field.dicom_tag)
    if dictionary_VR(tag) == "AS":
        return parse_dicom_age(None if value is None else str(value))
    if is_missing(value):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise DicomTagError(f"{tag} {value!r} is not a number") from err


def _dicom_category(field: EHRField, value: object) -> str | None:
    try:
        return field.canonical(value, str(field.dicom_tag))
    except ValueError as err:
        raise DicomTagError(str(err)) from err


def read_dicom_record(path: str | os.PathLike) -> dict[str, object]:
    """Read the EHR fields that have a DICOM tag (``schema.EHR_FIELDS``: PatientSex, PatientAge, ViewPosition) from
    a DICOM header into a schema record (pixels not read).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the file is not readable DICOM or has no image (Rows/Columns missing).
        DicomTagError: a tag holds a malformed value or a lateral view; the message names the file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"DICOM file {str(path)!r} does not exist")
    ds = read_dicom_dataset(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageLoadError(
            f"DICOM {path} has no Rows/Columns: it is not an image (SOP class {ds.get('SOPClassUID')})"
        )
    tagged = [ehr_field(column) for column in ehr_columns() if ehr_field(column).dicom_tag is not None]
    try:
        return {
            PATH: str(path),
            **{field.name: read_dicom_tag(field, ds.get(str(field.dicom_tag))) for field in tagged},
            FRONTAL_LATERAL: FRONTAL,
        }
    except DicomTagError as err:
        raise DicomTagError(f"DICOM {path}: {err}") from err


def scan_dicom_folder(
    folder: str | os.PathLike, exclude: Iterable[str | os.PathLike | None] = ()
) -> tuple[list[dict[str, object]], list[Failure]]:
    """Records of every DICOM file below ``folder`` (by suffix, preamble or bare data set) and ``(path, reason)``
    failures, one for every other file too: nothing in the folder is skipped silently. Folders in ``exclude``, output
    folders and hidden files are not inputs (:func:`~monai_diff3m.data.input_files.files_under`)."""
    records, failures = [], []
    for path in files_under(folder, exclude):
        if not is_dicom_file(path):
            failures.append((str(path), "not DICOM (no .dcm/.dicom suffix, no 'DICM' preamble, no DICOM data set)"))
            continue
        try:
            records.append(read_dicom_record(path))
        except (DicomTagError, ImageLoadError, OSError) as err:
            failures.append((str(path), str(err)))
    return records, failures
