"""EHR records from DICOM tags and image folders, for scoring studies that arrive without a dataset CSV.

A DICOM header carries the demographics Diff3M conditions on (PatientAge, PatientSex, ViewPosition), so a folder
of DICOM files can be scored without a CSV. Records use the column names of :mod:`monai_diff3m.data.schema`, hold
``None`` for a missing value (the EHR encoder gives missing its own embedding), and folder scans collect
per-file failures instead of stopping, so one broken file in a hospital export does not block the rest.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path, PurePath

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from monai_diff3m.data.schema import (
    AGE,
    FRONTAL,
    FRONTAL_LATERAL,
    MAX_AGE_YEARS,
    PATH,
    REQUIRED_COLUMNS,
    SEX,
    SEX_VALUES,
    VIEW,
    VIEW_VALUES,
)
from monai_diff3m.transforms.image import ImageLoadError, is_dicom_file

#: Suffixes :func:`scan_image_folder` reads with Pillow; DICOM files are found by :func:`is_dicom_file`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ViewPosition codes of lateral and decubitus projections: Diff3M is trained and evaluated on frontal views only.
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")

_AGE_PATTERN = re.compile(r"^(\d{1,3})([DWMY]?)$")
_DAYS_PER_YEAR = 365.25
_YEARS_PER_UNIT = {"D": 1.0 / _DAYS_PER_YEAR, "W": 7.0 / _DAYS_PER_YEAR, "M": 1.0 / 12.0, "Y": 1.0, "": 1.0}
_DICOM_SEX = {"M": SEX_VALUES[0], "F": SEX_VALUES[1], "O": None}


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
    """PatientSex ``M``/``F`` as the schema's sex vocabulary; ``O`` or empty is an explicitly missing value."""
    text = _text(value)
    if text and text not in _DICOM_SEX:
        raise DicomTagError(f"PatientSex {value!r} is not a DICOM sex code: expected 'M', 'F', 'O' or empty")
    return _DICOM_SEX.get(text)


def parse_view_position(value: str | None) -> str | None:
    """ViewPosition ``AP``/``PA`` (case and surrounding spaces ignored); empty -> None; lateral views rejected."""
    text = _text(value)
    if not text:
        return None
    if text in VIEW_VALUES:
        return text
    if text in LATERAL_VIEWS:
        raise DicomTagError(
            f"ViewPosition {value!r} is a lateral view: lateral views are not supported, Diff3M is frontal-only "
            f"(expected one of {VIEW_VALUES})"
        )
    raise DicomTagError(f"ViewPosition {value!r} is not a frontal view: expected one of {VIEW_VALUES} or empty")


def read_dicom_record(path: str | os.PathLike) -> dict[str, object]:
    """Read PatientSex, PatientAge and ViewPosition from a DICOM header into a schema record (pixels not read).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the file is not readable DICOM or has no image (Rows/Columns missing).
        DicomTagError: a tag holds a malformed value or a lateral view; the message names the file.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError) as err:
        raise ImageLoadError(f"cannot read DICOM header of {path}: {err}") from err
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageLoadError(
            f"DICOM {path} has no Rows/Columns: it is not an image (SOP class {ds.get('SOPClassUID')})"
        )
    try:
        return {
            PATH: str(path),
            SEX: parse_dicom_sex(ds.get("PatientSex")),
            AGE: parse_dicom_age(ds.get("PatientAge")),
            VIEW: parse_view_position(ds.get("ViewPosition")),
            FRONTAL_LATERAL: FRONTAL,
        }
    except DicomTagError as err:
        raise DicomTagError(f"DICOM {path}: {err}") from err


def _files_under(folder: str | os.PathLike) -> list[Path]:
    """All regular files below ``folder``, sorted so scans are reproducible."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file())


def scan_dicom_folder(folder: str | os.PathLike) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Records of every DICOM file below ``folder`` (by suffix or preamble) and ``(path, reason)`` failures."""
    records, failures = [], []
    for path in _files_under(folder):
        if not is_dicom_file(path):
            continue
        try:
            records.append(read_dicom_record(path))
        except (DicomTagError, ImageLoadError, OSError) as err:
            failures.append((str(path), str(err)))
    return records, failures


def _read_ehr_csv(ehr_csv: str | os.PathLike) -> pd.DataFrame:
    """The EHR CSV with missing cells as None, after checking the schema's required columns are present."""
    if not Path(ehr_csv).is_file():
        raise FileNotFoundError(f"EHR CSV {str(ehr_csv)!r} does not exist")
    table = pd.read_csv(ehr_csv, dtype={PATH: str})
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(
            f"EHR CSV {ehr_csv} lacks columns {missing}; expected {list(REQUIRED_COLUMNS)}, found {list(table.columns)}"
        )
    return table.astype(object).where(table.notna(), None)


def _check_ehr_row(row: dict[str, object]) -> None:
    """Reject values the DICOM reader would also reject, so CSV- and DICOM-sourced records mean the same."""
    if row[SEX] is not None and row[SEX] not in SEX_VALUES:
        raise ValueError(f"{SEX} = {row[SEX]!r}, expected one of {SEX_VALUES} or empty")
    if row[VIEW] is not None and row[VIEW] not in VIEW_VALUES:
        raise ValueError(f"{VIEW} = {row[VIEW]!r}, expected one of {VIEW_VALUES} or empty (frontal views only)")
    if row.get(FRONTAL_LATERAL) not in (None, FRONTAL):
        raise ValueError(f"{FRONTAL_LATERAL} = {row[FRONTAL_LATERAL]!r}, expected {FRONTAL!r} or empty")
    age = 0.0 if row[AGE] is None else pd.to_numeric(row[AGE], errors="coerce")
    if not 0.0 <= age <= MAX_AGE_YEARS:
        raise ValueError(f"{AGE} = {row[AGE]!r}, expected years in [0, {MAX_AGE_YEARS:g}] or empty")


def scan_image_folder(
    folder: str | os.PathLike, ehr_csv: str | os.PathLike
) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Join the PNG/JPEG/DICOM files below ``folder`` with the rows of ``ehr_csv`` that name them.

    The CSV's ``PATH`` column holds each file's path relative to ``folder``; otherwise its file name is looked up,
    when that name is unique in the folder (so a dataset CSV with ``images/test/x.png`` paths can key a folder
    holding ``x.png``). A record is the row (all its columns, missing cells as None) with ``PATH`` replaced by the
    file's full path. Files without a row, rows without a file, rows naming a file twice and rows with values
    outside the schema vocabularies are returned as ``(path, reason)`` failures naming the file and the CSV.

    Raises:
        FileNotFoundError: ``folder`` or ``ehr_csv`` does not exist.
        ValueError: ``ehr_csv`` lacks a column of ``schema.REQUIRED_COLUMNS``.
    """
    table = _read_ehr_csv(ehr_csv)
    root = Path(folder)
    files = [p for p in _files_under(root) if p.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(p)]
    by_relative = {p.relative_to(root).as_posix(): p for p in files}
    name_counts = Counter(p.name for p in files)
    by_name = {p.name: p for p in files if name_counts[p.name] == 1}

    records, failures, matched = [], [], set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"row {line} of {ehr_csv}"
        name = "" if row[PATH] is None else PurePath(row[PATH]).as_posix()
        path = by_relative.get(name) or by_name.get(PurePath(name).name)
        if path is None:
            reason = f"{where} names {name!r}, which is no image (or several same-named ones) in {folder}"
            failures.append((str(root / name), reason))
            continue
        if path in matched:
            failures.append((str(path), f"{where} names {name!r}, a file an earlier row of the CSV already names"))
            continue
        matched.add(path)
        try:
            _check_ehr_row(row)
        except ValueError as err:
            failures.append((str(path), f"{where}: {err}"))
            continue
        records.append({**row, PATH: str(path)})
    failures.extend((str(p), f"image has no row in {ehr_csv} (column {PATH!r})") for p in files if p not in matched)
    return records, failures
