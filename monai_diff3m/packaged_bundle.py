"""The Diff3M bundle as package data, so the main job and the studies find its configs after any install.

``monai_diff3m/bundle`` links to the repository's ``bundles/diff3m``: an editable install reads the configs being
edited, and ``pip install .`` copies ``configs/``, ``docs/`` and ``LICENSE`` into the installed package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundle_dir() -> Path:
    """The packaged bundle folder (``configs/``, ``docs/``, ``LICENSE``)."""
    return Path(str(files("monai_diff3m") / "bundle"))


def config_files(*names: str) -> list[str]:
    """Paths of the packaged configs ``names`` in merge order: ``config_files("inference.json", "evaluate.json")``."""
    return [str(bundle_dir() / "configs" / name) for name in names]
