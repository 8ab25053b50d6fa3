"""One run per output folder, tables written as they grow, and no stale files from an earlier run.

A scoring run can take hours and may be killed, or started twice into the same ``--output_dir``. The folder must
then never hold a mixture: ``OutputFolder`` takes a lock (a second run stops with an error naming the first),
refuses a folder with an earlier run's results unless overwriting was asked for, marks the folder as an output
folder (input scans skip it) and, when overwriting, removes the previous run's tables and the maps they name
before anything new is written. ``GrowingCSV`` appends each batch's rows to ``<name>.partial.csv`` (flushed to
disk, so a crash keeps every finished batch) and renames it onto ``<name>.csv`` when the run completes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m.data.input_files import OUTPUT_FOLDER_MARKER
from monai_diff3m.run_lock import RunInUseError, RunLock

logger = logging.getLogger(__name__)

LOCK_FILE = ".diff3m-run.lock"


def partial_path(path: str | os.PathLike) -> Path:
    """Where :class:`GrowingCSV` grows the table that becomes ``path``: ``scores.csv`` -> ``scores.partial.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class OutputFolderInUseError(RunInUseError):
    """Another live run holds the output folder's lock; the message names that run and the lock file."""


class OutputFolderNotEmptyError(RuntimeError):
    """The output folder holds an earlier run's results (or other files) and overwriting was not asked for."""


class OutputFolder:
    """The lock, the marker and the clean start of one run's output folder.

    A run never destroys an earlier run's results implicitly: a folder that holds anything but this package's
    marker and lock is refused unless ``overwrite`` is set, and even then only the earlier run's tables and the maps
    they name are removed (never the user's other files).

    Args:
        path: the output folder; created when missing.
        overwrite: allow a folder with an earlier run's results (``--overwrite true``).
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.lock_path = self.path / LOCK_FILE
        self.overwrite = overwrite
        self._lock = RunLock(
            self.lock_path,
            what=f"output folder {self.path}",
            remedy="Use another --output_dir, or wait",
            error=OutputFolderInUseError,
        )

    @property
    def held(self) -> bool:
        return self._lock.held

    def acquire(self) -> None:
        """Take the lock (``OutputFolderInUseError`` while a live run holds it) and refuse a folder with earlier
        results unless ``overwrite`` (``OutputFolderNotEmptyError`` naming a few of its files).

        A lock whose process is gone (a killed run, an empty lock file of a full disk) is taken over with a warning,
        so a rerun after a crash needs no manual cleanup.
        """
        self._lock.acquire()
        present = sorted(
            entry.name for entry in self.path.iterdir() if entry.name not in (LOCK_FILE, OUTPUT_FOLDER_MARKER)
        )
        if present and not self.overwrite:
            self.release()
            raise OutputFolderNotEmptyError(
                f"output folder {self.path} is not empty (it holds {present[:5]}): a run never replaces earlier "
                "results implicitly. Choose a new --output_dir, or pass --overwrite true to replace the earlier "
                "run's tables and maps"
            )
        (self.path / OUTPUT_FOLDER_MARKER).touch()

    def release(self) -> None:
        self._lock.release()

    def clear_previous_run(
        self, tables: Sequence[str], files_named_in: Sequence[str], file_columns: Iterable[str]
    ) -> None:
        """Remove an earlier run's ``tables`` and the files its ``files_named_in`` tables name in ``file_columns``
        (only files inside the folder), so no old table can point at a map this run overwrites."""
        root = self.path.resolve()
        named: set[Path] = set()
        for table_name in files_named_in:
            table_path = self.path / table_name
            if not table_path.is_file():
                continue
            try:
                table = pd.read_csv(table_path, dtype=str)
            except (OSError, ValueError, pd.errors.ParserError):
                continue  # a table cut short by a kill: the files it named are overwritten by name anyway
            for column in file_columns:
                if column in table.columns:
                    named.update((self.path / value).resolve() for value in table[column].dropna())
        for path in sorted(named):
            if root in path.parents:
                path.unlink(missing_ok=True)
        for table_name in tables:
            (self.path / table_name).unlink(missing_ok=True)


class GrowingCSV:
    """A table appended batch by batch to ``<stem>.partial.csv`` and renamed onto ``<stem>.csv`` when complete.

    The columns are fixed by the first rows written (later rows are aligned to them), so every batch extends the
    same table; each append is flushed and fsynced, so a killed run keeps every finished batch in the partial file.

    Args:
        path: the final CSV path.
        columns: the columns, or None to take them from the first rows appended.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        self.columns = None if columns is None else list(columns)
        self.partial_path.unlink(missing_ok=True)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.columns is None:
            if not rows:
                return
            self.columns = list(dict.fromkeys(key for row in rows for key in row))
        first = not self.partial_path.exists()
        with open(self.partial_path, "a", encoding="utf-8", newline="") as handle:
            pd.DataFrame(list(rows), columns=self.columns).to_csv(handle, header=first, index=False)
            handle.flush()
            os.fsync(handle.fileno())

    def promote(self) -> Path:
        """Rename the partial file onto the final path (a header-only table if no row came)."""
        if not self.partial_path.exists():
            pd.DataFrame(columns=self.columns or []).to_csv(self.partial_path, index=False)
        os.replace(self.partial_path, self.path)
        return self.path
