"""One run per output folder, tables written as they grow, and no stale files from an earlier run.

A scoring run can take hours and may be killed, or started twice into the same ``--output_dir``. The folder must
then never hold a mixture: ``OutputFolder`` takes a lock file (a second run stops with an error naming the first),
marks the folder as an output folder (input scans skip it) and removes the previous run's tables and the maps they
name before anything new is written. ``GrowingCSV`` appends each batch's rows to ``<name>.partial.csv`` (flushed to
disk, so a crash keeps every finished batch) and renames it onto ``<name>.csv`` when the run completes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m.data.input_files import OUTPUT_FOLDER_MARKER

logger = logging.getLogger(__name__)

LOCK_FILE = ".diff3m-run.lock"


def partial_path(path: str | os.PathLike) -> Path:
    """Where :class:`GrowingCSV` grows the table that becomes ``path``: ``scores.csv`` -> ``scores.partial.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class OutputFolderInUseError(RuntimeError):
    """Another live run holds the output folder's lock; the message names that run and the lock file."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputFolder:
    """The lock, the marker and the clean start of one run's output folder.

    Args:
        path: the output folder; created when missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        """Create the lock file, or raise ``OutputFolderInUseError`` if a live run of another process holds it.

        A lock left by a dead process on this host (killed run), or by this very process (a run that raised), is
        taken over with a warning, so a rerun after a crash needs no manual cleanup.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                descriptor = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    raise OutputFolderInUseError(
                        f"output folder {self.path} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('started')}): two runs into one folder would mix "
                        f"their results. Use another --output_dir, or wait; delete {self.lock_path} only if that "
                        "run is no longer running"
                    ) from None
                logger.warning("taking over %s left by a run that is no longer running (%s)", self.lock_path, holder)
                self.lock_path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(owner, handle)
            self.held = True
            (self.path / OUTPUT_FOLDER_MARKER).touch()
            return
        raise OutputFolderInUseError(f"cannot take the lock {self.lock_path}: another run took it at the same time")

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        """A lock of this host whose process is gone or is this process; unreadable or foreign locks are live."""
        pid = holder.get("pid")
        if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
            return False
        return pid == os.getpid() or not _process_alive(pid)

    def release(self) -> None:
        if self.held:
            self.lock_path.unlink(missing_ok=True)
            self.held = False

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
