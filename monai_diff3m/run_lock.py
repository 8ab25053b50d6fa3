"""One run at a time per folder: a lock that a live process holds and that a dead one can never keep.

The lock is an exclusive ``flock`` on a lock file, held through an open descriptor for the whole run: the kernel
frees it when the process ends, however it ends (killed, out of memory, crashed). A lock file left behind by a dead
run, even an empty one that a full disk cut short, is therefore free; its content (pid, host, start time) only
names the holder in the error a second run sees. Scoring locks its output folder, training its checkpoint folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Locks this process holds, by resolved path: a run that raised in this process (a test, a notebook) and never
#: released its lock must not block the next run of the same process.
_HELD: dict[Path, int] = {}


class RunInUseError(RuntimeError):
    """Another live process holds the lock; the message names that process and the lock file."""


class RunLock:
    """An exclusive lock file for one run of ``what`` (e.g. "output folder out/").

    Args:
        path: the lock file; its folder is created when missing.
        what: what the lock protects, for the error message.
        remedy: what the user can do instead of waiting, for the error message.
        enabled: ``False`` makes ``acquire``/``release`` do nothing (every rank but 0 of a distributed run).
        error: the ``RunInUseError`` subclass to raise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        what: str = "this folder",
        remedy: str = "wait for it to finish",
        enabled: bool = True,
        error: type[RunInUseError] = RunInUseError,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.remedy = remedy
        self.enabled = enabled
        self.error = error
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise ``error`` naming the live process that holds it. Returns ``self``."""
        if not self.enabled or self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if key in _HELD:
            logger.warning("taking over %s, left held by an earlier run of this process", self.path)
            _close(_HELD.pop(key))
        while True:
            existed = self.path.exists()
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(descriptor)
                _close(descriptor)
                raise self.error(
                    f"{self.what} is in use by another run (pid {holder.get('pid', 'unknown')} on "
                    f"{holder.get('host', 'unknown host')}, started {holder.get('started', 'at an unknown time')}): "
                    f"two runs would mix their results. {self.remedy}; the lock {self.path} is freed when that "
                    "process ends"
                ) from None
            if _same_file(descriptor, self.path):
                break
            _close(descriptor)  # the holder released (removed) the file between our open and flock: retry
        if existed:
            holder = _read_holder(descriptor)
            logger.warning("taking over %s, left by a run that is no longer running (%s)", self.path, holder)
        _write_holder(descriptor)
        self._descriptor = descriptor
        _HELD[key] = descriptor
        return self

    def release(self) -> None:
        """Remove the lock file and free the lock (a no-op when not held)."""
        if self._descriptor is None:
            return
        _HELD.pop(self.path.resolve(), None)
        self.path.unlink(missing_ok=True)
        _close(self._descriptor)
        self._descriptor = None


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.fstat(descriptor).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _read_holder(descriptor: int) -> dict[str, Any]:
    """The holder's pid/host/start time, or ``{}`` for an empty or unreadable lock file."""
    try:
        content = os.pread(descriptor, 4096, 0)
        holder = json.loads(content.decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(descriptor: int) -> None:
    """Name this process in the lock file; on a full disk the lock holds anyway, only the name is lost."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(owner).encode("utf-8"), 0)
    except OSError as error:
        logger.warning("lock taken, but its holder cannot be written into the lock file: %s", error)


def _close(descriptor: int) -> None:
    try:
        os.close(descriptor)
    except OSError:
        pass
