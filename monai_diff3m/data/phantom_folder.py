"""Where a phantom dataset lies: the marker file the generator writes, and the test for it.

Kept apart from :mod:`monai_diff3m.data.phantoms` so that checkpoints can tell phantom data without importing the
generator (which ``python -m monai_diff3m.data.phantoms`` must be the first to import).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The generator's parameters, written at the root of every phantom dataset.
PARAMETERS_FILE = "phantoms.json"


def is_phantom_data(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` (a CSV, image folder or file) lies in a phantom dataset (a folder holding ``phantoms.json``).

    Checkpoints record it as their training data kind, so that scoring real films with a phantom model can warn.
    """
    if path is None:
        return False
    resolved = Path(path).resolve()
    return any((folder / PARAMETERS_FILE).is_file() for folder in (resolved, *resolved.parents))
