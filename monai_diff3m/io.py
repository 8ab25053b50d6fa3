"""Atomic file writes shared by every writer in the package (metrics, score tables, configs, plots).

A run that is killed or raises while writing must never leave a half-written JSON/CSV/PNG where a previous good
file was, because later steps (evaluation, bundle docs) read these files back without knowing how they were made.
Every writer therefore writes to a temporary file in the *same* folder (so ``os.replace`` is an atomic rename on
the same file system) and renames it onto the target only after the write finished.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["atomic_path", "write_json_atomic", "write_csv_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block finishes without error.

    The temporary path does not exist yet, so the writer creates it with the normal permissions (umask) that a
    direct write would get. Its name ends with all of ``path``'s suffixes, so libraries that infer a format or
    compression from the extension (matplotlib, pandas ``.csv.gz``, nibabel ``.nii.gz``) behave as if writing
    ``path`` itself. On any exception the temporary file is removed and the previous content of ``path`` is left
    untouched.

    Args:
        path: final destination. Its folder must already exist.

    Raises:
        FileNotFoundError: the destination folder does not exist, or the block wrote nothing to the temporary path.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp{''.join(target.suffixes)}")
    try:
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"nothing was written for {target}: temporary file {temporary} was not created")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _to_json_value(value: Any) -> Any:
    """Convert the numpy and path objects that metric code naturally produces into plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path.

    NaN and infinity are rejected (``allow_nan=False``) because they are not valid JSON and most readers other than
    Python's fail on them. numpy scalars/arrays and paths are converted to plain values.

    Raises:
        ValueError: ``obj`` contains NaN or infinity, or cannot be serialised; the message names ``path``.
    """
    target = Path(path)
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False, default=_to_json_value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot write JSON to {target}: {error}") from error
    with atomic_path(target) as temporary:
        temporary.write_text(text + "\n", encoding="utf-8")
    return target


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """Write a DataFrame as CSV to ``path`` atomically and return the path.

    Compression is inferred from ``path``'s extension exactly as :meth:`pandas.DataFrame.to_csv` would do.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"cannot write CSV to {path}: expected a pandas DataFrame, got {type(frame).__name__}")
    target = Path(path)
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=index)
    return target
