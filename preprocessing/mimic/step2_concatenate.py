"""Step 2: concatenate step 1's parts into ``<work>/image_ehr.csv``, checking them against step 1's manifest.

The manifest is written only after every part, so its presence proves step 1 finished; the row counts it
records catch a part that was replaced or truncated since.

Usage::

    python -m monai_diff3m.preprocessing.mimic.step2_concatenate --work-dir /data/mimic_work
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic

from ..common import InputTableError, exit_on_input_error, progress, read_table, shown
from . import layout

__all__ = ["IMAGE_EHR_COLUMNS", "run", "main"]

#: Columns of the parts and of ``image_ehr.csv``.
IMAGE_EHR_COLUMNS = (layout.DICOM_ID, *schema.MIMIC_EHR_COLUMNS)


def run(work_dir: Path) -> Path:
    """Concatenate the parts listed in the manifest and return the path of ``image_ehr.csv``."""
    parts_dir = Path(work_dir) / layout.PARTS_DIR
    manifest_path = parts_dir / layout.MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: step 1 has not finished in this work folder (it writes the manifest last)"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    frames = []
    for part in manifest["parts"]:
        path = parts_dir / part["file"]
        frame = read_table(path, IMAGE_EHR_COLUMNS, dtype={layout.DICOM_ID: str})
        if len(frame) != part["rows"]:
            raise InputTableError(f"{path}: has {len(frame)} rows but {manifest_path} records {part['rows']}")
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    if len(combined) != manifest["images"]:
        raise InputTableError(
            f"{parts_dir}: parts hold {len(combined)} rows, {manifest_path} expects {manifest['images']} images"
        )
    duplicated = combined[layout.DICOM_ID].duplicated()
    if duplicated.any():
        first = shown(combined[layout.DICOM_ID][duplicated].iloc[0])
        raise InputTableError(f"{parts_dir}: {layout.DICOM_ID} {first} appears in more than one part")
    output = write_csv_atomic(combined, Path(work_dir) / layout.IMAGE_EHR)
    progress(f"step2: {len(frames)} parts, {len(combined):,} images -> {output}")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="folder holding step 1's ehr_parts/")
    args = parser.parse_args(argv)
    with exit_on_input_error():
        run(args.work_dir)


if __name__ == "__main__":
    main()
