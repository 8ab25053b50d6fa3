"""Reading and validating the raw dataset tables, shared by the CheXpert and MIMIC pipelines.

The raw tables are large, gzip-compressed and written by other people, so every read is column-pruned (only the
columns a step uses are parsed) and checked before use: a missing column, an unparseable date or a non-integer ID
stops the run with a message that names the file, the column and the offending row, instead of surfacing later as
a ``KeyError`` or a silently wrong join.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "InputTableError",
    "MissingColumnError",
    "progress",
    "resolve_table",
    "read_header",
    "require_columns",
    "read_table",
    "integer_ids",
    "shown",
    "day_numbers",
    "line_number",
    "canonical_values",
    "one_row_per_key",
    "exit_on_input_error",
]

#: Offset from a 0-based data row index to the 1-based line number a user sees in an editor (line 1 is the header).
_HEADER_LINES = 2


class InputTableError(ValueError):
    """An input table is missing or malformed; the message names the file, the column and what was expected."""


class MissingColumnError(InputTableError):
    """An input table lacks a column that the pipeline needs."""


def progress(message: str) -> None:
    """Report progress on stderr so that stdout stays free for the summaries a user may redirect to a file."""
    print(message, file=sys.stderr, flush=True)


def resolve_table(folders: Sequence[Path], stem: str) -> Path:
    """Find ``stem.csv.gz`` or ``stem.csv`` in the first of ``folders`` that has one.

    The PhysioNet downloads are gzip-compressed, but users often decompress them; both must work unchanged.

    Raises:
        FileNotFoundError: none of the candidate files exists; the message lists every path tried.
    """
    candidates = [Path(folder) / f"{stem}{suffix}" for folder in folders for suffix in (".csv.gz", ".csv")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"table {stem!r} not found; looked for {', '.join(str(path) for path in candidates)}")


def read_header(path: Path) -> list[str]:
    """Return the column names of a CSV without reading its rows."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"input table not found: {path}")
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError as error:
        raise InputTableError(f"{path} is empty: expected a CSV header") from error


def require_columns(path: Path, found: Sequence[str], required: Sequence[str]) -> None:
    """Raise :class:`MissingColumnError` naming ``path`` and every column of ``required`` absent from ``found``."""
    missing = [column for column in required if column not in found]
    if missing:
        raise MissingColumnError(f"{path}: missing column(s) {missing}; the file has columns {list(found)}")


def read_table(
    path: Path,
    columns: Sequence[str],
    integer_columns: Sequence[str] = (),
    dtype: dict[str, object] | None = None,
) -> pd.DataFrame:
    """Read only ``columns`` of a CSV (``.csv`` or ``.csv.gz``), checking they exist, that there are rows and that
    IDs are integers.

    Args:
        path: the table.
        columns: columns to read; each must be present.
        integer_columns: columns (a subset of ``columns``) that must hold integers in every row.
        dtype: optional pandas dtypes per column, e.g. ``str`` for identifiers that look numeric.
    """
    require_columns(path, read_header(path), columns)
    frame = pd.read_csv(path, usecols=list(columns), dtype=dtype)
    if frame.empty:
        raise InputTableError(f"{path} has a header but no rows")
    for column in integer_columns:
        frame[column] = integer_ids(frame[column], path, column)
    return frame


def shown(value: object) -> str:
    """``repr`` of a table cell as plain Python (``2.5``, not numpy 2's ``np.float64(2.5)``), for error messages."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def line_number(values: pd.Series, position: int) -> int:
    """Line number in the file of ``values``' row at ``position``: ``read_csv`` numbers rows from 0 (also across
    chunks) and the header is line 1."""
    return int(values.index[position]) + _HEADER_LINES


def integer_ids(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Return ``values`` as int64, or raise naming the first line whose value is missing or not an integer.

    Args:
        values: the column as ``read_csv`` parsed it, with its row index (used for the line number).
        path: file the column came from (for the message).
        column: column name (for the message).
    """
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(np.int64)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy() | (numbers.to_numpy(dtype=float, na_value=np.nan) % 1 != 0)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise InputTableError(
            f"{path}: column {column!r} must hold integer IDs; line {line_number(values, position)} "
            f"has {shown(values.iloc[position])}"
        )
    return numbers.astype(np.int64)


def day_numbers(values: pd.Series, date_format: str, path: Path, column: str) -> np.ndarray:
    """Parse dates into whole days since 1970-01-01 (int32), or raise naming the first unparseable row.

    Day numbers make the ±window nearest-date join an integer comparison and keep the joined tables small.

    Args:
        values: strings or integers such as ``2180-05-06`` or ``21800506``, with their ``read_csv`` row index.
        date_format: ``strptime`` format every value must match, e.g. ``%Y-%m-%d`` or ``%Y%m%d``.
        path: file the column came from (for the message).
        column: column name (for the message).
    """
    parsed = pd.to_datetime(values.astype(str), format=date_format, errors="coerce", cache=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise InputTableError(
            f"{path}: column {column!r} must hold dates in the format {date_format!r}; "
            f"line {line_number(values, position)} has {shown(values.iloc[position])}"
        )
    return parsed.to_numpy().astype("datetime64[D]").astype(np.int32)


def canonical_values(
    values: pd.Series, canonical: Callable[[Any], str | None], path: Path, column: str, refuse: bool = True
) -> pd.Series:
    """``values`` in the bundle's spelling, through the bundle's own reader of the field (a ``schema.canonical_*``
    function, called once per distinct value), so that the pipelines keep exactly the spellings the bundle reads.

    Args:
        values: the column as ``read_csv`` parsed it, with its row index (used for the line number).
        canonical: e.g. :func:`monai_diff3m.schema.canonical_sex`; returns None for a missing value.
        path: file the column came from (for the message).
        column: column name (for the message).
        refuse: raise on a value ``canonical`` refuses; with False it becomes None (a filter then drops and counts it).

    Raises:
        InputTableError: naming the file, the column, the first line with a refused value and ``canonical``'s reason.
    """
    spellings: dict[Any, str | None] = {}
    for value in pd.unique(values):
        try:
            spellings[value] = canonical(value)
        except ValueError as error:
            if refuse:
                position = int(np.flatnonzero((values == value).to_numpy())[0])
                raise InputTableError(
                    f"{path}: column {column!r}, line {line_number(values, position)}: {error}"
                ) from error
            spellings[value] = None
    return values.map(spellings)


def one_row_per_key(table: pd.DataFrame, key: str, origins: pd.Series, source: str, log_prefix: str) -> pd.DataFrame:
    """``table`` with one row per ``key``: a row that repeats an earlier row exactly is dropped and counted in the
    log; two different rows with one key would double an image or give it two EHRs, so they stop the run.

    Args:
        table: the rows (every column is compared).
        key: the column that must be unique.
        origins: where each row of ``table`` came from (``"train.csv line 7"``), on the same index.
        source: what the rows were read from, first in the message of the error and of the log line.
        log_prefix: start of the log line (``"step3"``).

    Raises:
        InputTableError: naming the key, both rows' origins and their values.
    """
    repeated = table.duplicated(keep="first")
    if repeated.any():
        later = table.index[repeated][0]
        earlier = table.index[(table[key] == table.at[later, key]).to_numpy()][0]
        count = int(repeated.sum())
        progress(
            f"{log_prefix}: {source}: {count:,} row{'s' if count > 1 else ''} repeat{'' if count > 1 else 's'} an "
            f"earlier row exactly (e.g. {key} {shown(table.at[later, key])}: {origins.loc[earlier]} and "
            f"{origins.loc[later]}): kept once"
        )
        table = table[~repeated]
    conflicting = table[key].duplicated(keep=False)
    if conflicting.any():
        value = table.loc[conflicting, key].iloc[0]
        both = table[(table[key] == value).to_numpy()].iloc[:2]
        rows = " and ".join(f"{origins.loc[index]} ({both.loc[index].to_dict()})" for index in both.index)
        raise InputTableError(f"{source}: {key} {shown(value)} is on two rows that differ, {rows}; give it one row")
    return table


@contextmanager
def exit_on_input_error() -> Iterator[None]:
    """Turn a bad-input error into a one-line message and exit status 1: the message is the useful part, not the
    traceback."""
    try:
        yield
    except (InputTableError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
