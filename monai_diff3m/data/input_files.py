"""Which files of an input folder are inputs: never the outputs of a scoring run, never hidden files.

An output folder inside the input folder (``--output_dir DIR/out``) holds PNG overlays that a rerun would otherwise
try to score. The result writer marks every output folder with :data:`OUTPUT_FOLDER_MARKER`, and scans skip marked
folders and the folders they are told to exclude (the current run's output folder, marked or not yet).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from monai_diff3m.errors import MissingInputError

#: ``(path, reason)``: an input that is not scored and why, one ``failures.csv`` row.
Failure = tuple[str, str]
#: Empty file the result writer leaves in every output folder, so input scans recognise and skip the folder.
OUTPUT_FOLDER_MARKER = ".diff3m-output"


def files_under(folder: str | os.PathLike, exclude: Iterable[str | os.PathLike | None] = ()) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, sorted so scans are reproducible, leaving out the folders
    in ``exclude`` and every folder holding :data:`OUTPUT_FOLDER_MARKER` (with everything below them).

    Hidden files (``.name``) are system files (``.DS_Store``) or temporary files of an interrupted write.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingInputError(f"image folder {str(folder)!r} does not exist or is not a directory")
    excluded = {Path(path).resolve() for path in exclude if path is not None}
    files: list[Path] = []
    for current, folders, names in os.walk(root):
        here = Path(current)
        if here.resolve() in excluded or OUTPUT_FOLDER_MARKER in names:
            folders.clear()
            continue
        folders[:] = [name for name in folders if not name.startswith(".")]
        files.extend(here / name for name in names if not name.startswith(".") and (here / name).is_file())
    return sorted(files)
