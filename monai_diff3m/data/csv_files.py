"""Reading the CSVs users hand us (dataset splits, EHR tables) with errors that name the file and what is wrong.

Spreadsheet exports arrive as UTF-8 with or without a byte-order mark, as UTF-16 (Excel's "Unicode text"), or in a
legacy code page; and a value with an unquoted comma makes a row longer than the header. pandas reports these as
``UnicodeDecodeError`` or ``ParserError`` without the file name, so every CSV goes through :func:`read_csv_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_HEAD_BYTES = 4096


class DatasetCSVError(ValueError):
    """A dataset or EHR CSV is missing, empty or malformed; the message names the file, the row and the column."""


def _encoding(path: Path, description: str) -> str:
    """UTF-16 when the file starts with its byte-order mark, else UTF-8 (a UTF-8 byte-order mark is skipped)."""
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if head.startswith(_UTF16_MARKS):
        return "utf-16"
    if b"\x00" in head:
        raise DatasetCSVError(
            f"{description} {path} contains NUL bytes: it is UTF-16 without a byte-order mark or not a text file; "
            "save it as UTF-8 CSV"
        )
    return "utf-8-sig"


def read_csv_file(path: str | os.PathLike, description: str, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a CSV as UTF-8 (with or without byte-order mark) or UTF-16 with byte-order mark.

    Args:
        path: the CSV file; it must exist.
        description: what the file is, for messages ("dataset CSV", "EHR CSV").
        dtype: column types passed to :func:`pandas.read_csv`.

    Raises:
        DatasetCSVError: the file is empty, not UTF-8/UTF-16 text, or has a row with more fields than the header;
            the message names the file and, where pandas knows it, the line.
    """
    path = Path(path)
    encoding = _encoding(path, description)
    try:
        return pd.read_csv(path, dtype=dtype, encoding=encoding)
    except UnicodeDecodeError as error:
        raise DatasetCSVError(
            f"{description} {path} is not {encoding.upper().replace('-SIG', '')} text ({error.reason}: byte "
            f"{error.object[error.start : error.start + 1]!r} at offset {error.start} of a block): save it as "
            "UTF-8 CSV (a Latin-1 or Windows code page export is not read, to avoid misreading file names)"
        ) from error
    except pd.errors.EmptyDataError as error:
        raise DatasetCSVError(f"{description} {path} is empty (no header)") from error
    except pd.errors.ParserError as error:
        raise DatasetCSVError(
            f"{description} {path} is not a well-formed CSV: {str(error).strip()}. Every row needs the header's "
            "number of comma-separated fields; quote values that contain commas"
        ) from error
