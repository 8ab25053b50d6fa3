"""A live process that holds a run lock, as a concurrent run would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def hold_lock_in_another_process(lock_path: Path) -> subprocess.Popen:
    """Start a process that takes ``RunLock(lock_path)`` and sleeps; returns once it holds the lock."""
    code = (
        "import time; from monai_diff3m.run_lock import RunLock; "
        f"RunLock({str(lock_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder
