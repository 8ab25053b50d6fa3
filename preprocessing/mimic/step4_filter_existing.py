r"""Step 4: drop the rows of ``joined.csv`` whose JPEG is not on disk -> ``<work>/existing.csv``.

Users often download only part of MIMIC-CXR-JPG (e.g. ``files/p10``); the bundles fail on a missing image, so
the CSVs list only images that exist. ``check_files=False`` passes every row through, for benchmarks and for
preparing CSVs on a machine that does not hold the images.

Usage::

    python -m monai_diff3m.preprocessing.mimic.step4_filter_existing --mimic-cxr /data/mimic-cxr-jpg/2.0.0 \
        --work-dir /data/mimic_work
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic

from ..common import InputTableError, exit_on_input_error, progress, read_table
from . import layout
from .step3_join import JOINED_COLUMNS

__all__ = ["run", "add_arguments", "main"]

_PROGRESS_EVERY = 50_000


def _existing(root: Path, paths: pd.Series) -> pd.Series:
    """Whether each path exists under ``root``, reporting progress: on network storage this takes minutes."""
    found = []
    for index, relative in enumerate(paths, start=1):
        found.append(os.path.isfile(root / relative))
        if index % _PROGRESS_EVERY == 0 or index == len(paths):
            progress(f"step4: {index:,}/{len(paths):,} images checked, {sum(found):,} found")
    return pd.Series(found, index=paths.index, dtype=bool)


def run(mimic_cxr: Path, work_dir: Path, check_files: bool = True) -> Path:
    """Write and return ``<work>/existing.csv``: the rows of ``joined.csv`` whose image exists under ``mimic_cxr``.

    Raises:
        InputTableError: no image exists, which almost always means ``mimic_cxr`` is not the folder holding
            ``files/``.
    """
    work_dir = Path(work_dir)
    joined_path = work_dir / layout.JOINED
    if not joined_path.is_file():
        raise FileNotFoundError(f"{joined_path} not found: run step 3 with this work folder first")
    joined = read_table(joined_path, JOINED_COLUMNS, dtype={schema.PATH: str})
    if check_files:
        exists = _existing(Path(mimic_cxr), joined[schema.PATH])
        if len(joined) and not exists.any():
            raise InputTableError(
                f"{joined_path}: none of the {len(joined):,} images in column {schema.PATH!r} exists under "
                f"{mimic_cxr}; pass the MIMIC-CXR-JPG folder that holds files/"
            )
        joined = joined[exists]
    else:
        progress("step4: image existence check skipped")
    return write_csv_atomic(joined, work_dir / layout.EXISTING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Step 4 options, shared with ``run_all``."""
    parser.add_argument(
        "--skip-existence-check",
        action="store_true",
        help="keep rows whose image is not on disk (CSV preparation without the images)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-cxr", type=Path, required=True, help="MIMIC-CXR-JPG 2.0.0 root (holding files/)")
    parser.add_argument("--work-dir", type=Path, required=True, help="folder holding step 3's joined.csv")
    add_arguments(parser)
    args = parser.parse_args(argv)
    with exit_on_input_error():
        run(args.mimic_cxr, args.work_dir, check_files=not args.skip_existence_check)


if __name__ == "__main__":
    main()
