"""EHR records of an image folder joined with an EHR CSV, for scoring films that arrive without a dataset CSV.

Every file below the folder becomes a record or a ``(path, reason)`` failure (one broken or unlisted file in a
hospital export does not block the rest), and a film is never given another patient's row: see
:func:`scan_image_folder`. Records use the column names of :mod:`monai_diff3m.schema` and hold ``None`` for a
missing value, as DICOM-tag records do (:mod:`monai_diff3m.data.dicom`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from monai_diff3m.data.csv_files import read_csv_file
from monai_diff3m.data.input_files import Failure, files_under
from monai_diff3m.errors import MissingInputError
from monai_diff3m.schema import (
    AGE,
    EHR_ROW,
    FRONTAL,
    FRONTAL_LATERAL,
    MAX_AGE_YEARS,
    PATH,
    REQUIRED_COLUMNS,
    canonical_frontal_lateral,
    ehr_fields,
)
from monai_diff3m.transforms.image import is_dicom_file

#: Suffixes :func:`scan_image_folder` reads with Pillow; DICOM files are found by :func:`is_dicom_file`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_ehr_csv(ehr_csv: str | os.PathLike) -> pd.DataFrame:
    """The EHR CSV with missing cells as None, after checking the schema's required columns are present."""
    if not Path(ehr_csv).is_file():
        raise MissingInputError(f"EHR CSV {str(ehr_csv)!r} does not exist")
    table = read_csv_file(ehr_csv, "EHR CSV", dtype={PATH: str})
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(
            f"EHR CSV {ehr_csv} lacks columns {missing}; expected {list(REQUIRED_COLUMNS)}, found {list(table.columns)}"
        )
    return table.astype(object).where(table.notna(), None)


def _canonical_ehr_row(row: dict[str, object]) -> dict[str, object]:
    """The row with its categorical fields (sex, view) in the schema vocabulary; values the DICOM reader would reject
    raise ``ValueError``, so CSV- and DICOM-sourced records mean the same."""
    row = {
        **row,
        **{
            field.name: field.canonical(row[field.name])
            for field in ehr_fields()
            if field.is_categorical and field.name in row
        },
    }
    if canonical_frontal_lateral(row.get(FRONTAL_LATERAL)) not in (None, FRONTAL):
        raise ValueError(f"{FRONTAL_LATERAL} = {row[FRONTAL_LATERAL]!r}: lateral films are not supported")
    age = 0.0 if row[AGE] is None else pd.to_numeric(row[AGE], errors="coerce")
    if not 0.0 <= age <= MAX_AGE_YEARS:
        raise ValueError(f"{AGE} = {row[AGE]!r}, expected years in [0, {MAX_AGE_YEARS:g}] or empty")
    return row


def _csv_path(value: object) -> PurePosixPath | None:
    """A CSV ``Path`` cell as a relative POSIX path (backslashes and a leading ``./`` or ``/`` removed)."""
    if value is None or not str(value).strip():
        return None
    path = PurePosixPath(str(value).strip().replace("\\", "/"))
    return path.relative_to(path.anchor) if path.anchor else path


def _ends_with(row_path: PurePosixPath, relative: PurePosixPath) -> bool:
    """Whether a row's path ends with a file's whole relative path (``images/test/x.png`` ends with ``x.png``): the
    row then names every folder the file lies in. A shorter row (``x.png`` for ``sub/x.png``) never fits a file in
    a sub-folder: it may be another patient's film that is absent, and ``patient1/study1/x.png`` never fits
    ``patient2/study1/x.png``."""
    return len(row_path.parts) >= len(relative.parts) and row_path.parts[-len(relative.parts) :] == relative.parts


def scan_image_folder(
    folder: str | os.PathLike, ehr_csv: str | os.PathLike, exclude: Iterable[str | os.PathLike | None] = ()
) -> tuple[list[dict[str, object]], list[Failure]]:
    """Join the files below ``folder`` with the rows of ``ehr_csv`` that name them; never guess a patient's EHR.

    A row's ``PATH`` is the file's path relative to ``folder``. A row naming no such file falls back to the one
    file whose whole relative path the row's path ends with (a dataset CSV's ``images/test/x.png`` keys
    ``folder/x.png``), among the files no row names exactly; never to a file in a sub-folder the row does not name
    (``x.png`` does not key ``folder/p1/x.png``, ``patient2/s1/x.png`` not ``patient1/s1/x.png``). A record is the
    row (all its columns, missing cells as None, sex and view in the schema vocabulary) with ``PATH`` replaced by the
    file's full path and ``schema.EHR_ROW`` saying which row was used. Every file below ``folder`` (but ``ehr_csv``
    itself, hidden files and output folders) is a record or a failure: files without a row (whatever their
    suffix), rows without a file, a row that fits several files, a file that several rows name (its EHR is
    ambiguous: it is not scored) and rows with values outside the schema vocabularies are ``(path, reason)``
    failures naming the file, every path involved and the CSV row.

    Raises:
        FileNotFoundError: ``folder`` or ``ehr_csv`` does not exist.
        ValueError: ``ehr_csv`` is unreadable (``DatasetCSVError``) or lacks a column of ``schema.REQUIRED_COLUMNS``.
    """
    table = _read_ehr_csv(ehr_csv)
    root = Path(folder)
    files = [path for path in files_under(root, exclude) if path.resolve() != Path(ehr_csv).resolve()]
    relative = {path: PurePosixPath(path.relative_to(root).as_posix()) for path in files}
    by_relative = {str(name): path for path, name in relative.items()}
    files_by_name: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        files_by_name[path.name].append(path)

    rows = list(enumerate(table.to_dict("records"), start=2))
    named = {line: _csv_path(row[PATH]) for line, row in rows}
    claims: dict[Path, list[int]] = defaultdict(list)
    for line, name in named.items():
        if name is not None and str(name) in by_relative:
            claims[by_relative[str(name)]].append(line)
    exact = set(claims)

    failures: list[Failure] = []
    for line, name in named.items():
        where = f"row {line} of {ehr_csv}"
        if name is None:
            failures.append((str(root), f"{where} has an empty {PATH!r}"))
            continue
        if str(name) in by_relative:
            continue
        fits = [p for p in files_by_name.get(name.name, []) if _ends_with(name, relative[p])]
        candidates = [p for p in fits if p not in exact]
        if len(candidates) == 1:
            claims[candidates[0]].append(line)
            continue
        listed = ", ".join(repr(str(relative[p])) for p in (candidates or fits))
        deeper = ", ".join(repr(str(relative[p])) for p in files_by_name.get(name.name, []) if p not in fits)
        if candidates:
            reason = f"fits several images ({listed}): write the path relative to {folder}"
        elif fits:
            reason = f"but the image(s) it could mean ({listed}) are named exactly by other rows"
        elif deeper:
            reason = (
                f"but no image in {folder} has that relative path; {deeper} lie in sub-folders the row does not "
                f"name (perhaps another patient's film): write the path relative to {folder}"
            )
        else:
            reason = f"but no image in {folder} has that relative path or ends with it"
        failures.append((str(root / name), f"{where} names {str(name)!r}, {reason}"))

    records = []
    for path, lines in sorted(claims.items(), key=lambda item: item[1][0]):
        if len(lines) > 1:
            paths = ", ".join(f"row {line} {str(named[line])!r}" for line in lines)
            failures.append(
                (
                    str(path),
                    f"several rows of {ehr_csv} name this image ({paths}): its EHR is ambiguous, "
                    "so it is not scored; keep one row per image",
                )
            )
            continue
        line = lines[0]
        try:
            row = _canonical_ehr_row(dict(rows[line - 2][1]))
        except ValueError as err:
            failures.append((str(path), f"row {line} of {ehr_csv}: {err}"))
            continue
        records.append({**row, PATH: str(path), EHR_ROW: f"row {line}: {named[line]}"})
    failures.extend((str(p), _unclaimed_reason(p, ehr_csv)) for p in files if p not in claims)
    return records, failures


def _unclaimed_reason(path: Path, ehr_csv: str | os.PathLike) -> str:
    """Why a file of the image folder is not scored: no row names it (and what kind of file it is)."""
    if path.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(path):
        return f"image has no row in {ehr_csv} (column {PATH!r})"
    return (
        f"no row of {ehr_csv} names this file (column {PATH!r}), and {path.suffix or 'a file without suffix'} is "
        f"not a film this bundle scans for ({', '.join(IMAGE_SUFFIXES)}, DICOM): add a row to score it"
    )
