"""Step 5: apply the row policies, write ``train.csv`` / ``valid.csv`` / ``test.csv`` and print a summary.

By default every image is kept: a missing EHR value stays empty (the model has a learned "missing" embedding) and
studies with support devices stay in. The authors' ``analysis_mimic.py`` (``make_mimic_1_5_dataset``) keeps the
rows whose five EHR values are all non-zero, their step 1 having written a missing value as 0:
``drop_incomplete_ehr`` reproduces it (a value that is missing or 0 drops the row). Their
``drop('Support Devices', axis=1)`` removes the label *column*, so studies with support devices stay in their data,
as here by default (the final CSVs have no such column either); ``drop_support_devices`` drops those *studies*
instead, which is not the authors' policy. The split is MIMIC-CXR's official one unless ``split="patient"`` asks
for a seeded patient-level re-split. The summary (counts per split, label, sex and
view; missingness and distribution per EHR feature) is printed and saved as ``summary.json`` next to the CSVs.

Usage::

    python -m monai_diff3m.preprocessing.mimic.step5_summarise --work-dir /data/mimic_work --output /data/mimic_csv
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m import schema

from ..common import exit_on_input_error, progress, read_table
from ..labels import SUPPORT_DEVICES
from ..splits import OUTPUT_COLUMNS, SPLIT, patient_split, split_frames, write_splits
from ..summary import format_summary, save_summary, summarise
from . import layout
from .step3_join import JOINED_COLUMNS

__all__ = [
    "SPLIT_SOURCES",
    "MIMIC_OUTPUT_COLUMNS",
    "incomplete_ehr",
    "run",
    "run_with_options",
    "add_arguments",
    "main",
]

SPLIT_SOURCES = ("official", "patient")
#: Columns of the final MIMIC CSVs.
MIMIC_OUTPUT_COLUMNS = (*OUTPUT_COLUMNS, *schema.MIMIC_EHR_COLUMNS)


def incomplete_ehr(frame: pd.DataFrame) -> pd.Series:
    """True where one of the five EHR values is missing or 0: the rows the authors' ``!= 0`` test drops."""
    values = frame[list(schema.MIMIC_EHR_COLUMNS)]
    return (values.isna() | (values == 0)).any(axis=1)


def run(
    work_dir: Path,
    output_dir: Path,
    drop_support_devices: bool = False,
    drop_incomplete_ehr: bool = False,
    split: str = "official",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the final CSVs and ``summary.json`` from ``<work>/existing.csv``; return the summary.

    Args:
        work_dir: folder holding step 4's ``existing.csv``.
        output_dir: folder for ``train.csv``, ``valid.csv``, ``test.csv`` and ``summary.json``.
        drop_support_devices: drop studies labelled with support devices (not the authors' policy, see above).
        drop_incomplete_ehr: keep only rows whose five EHR values are all present and non-zero (the authors').
        split: ``"official"`` (MIMIC-CXR's split file) or ``"patient"`` (seeded re-split by patient).
        valid_fraction: share of patients for validation when ``split="patient"``.
        test_fraction: share of patients for test when ``split="patient"``.
        seed: seed of the patient shuffle when ``split="patient"``.
    """
    if split not in SPLIT_SOURCES:
        raise ValueError(f"split must be one of {SPLIT_SOURCES}, got {split!r}")
    existing_path = Path(work_dir) / layout.EXISTING
    if not existing_path.is_file():
        raise FileNotFoundError(f"{existing_path} not found: run step 4 with this work folder first")
    frame = read_table(existing_path, JOINED_COLUMNS, dtype={schema.PATH: str})
    missing_ehr = frame[list(schema.MIMIC_EHR_COLUMNS)].isna().any(axis=1)
    incomplete = incomplete_ehr(frame)
    support_devices = frame[SUPPORT_DEVICES] == 1.0
    counts = {
        "rows_read": len(frame),
        "support_devices": int(support_devices.sum()),
        "rows_with_missing_ehr_before_policies": int(missing_ehr.sum()),
        "rows_with_missing_or_zero_ehr_before_policies": int(incomplete.sum()),
    }
    drop = (support_devices & drop_support_devices) | (incomplete & drop_incomplete_ehr)
    counts["dropped_by_policies"] = int(drop.sum())
    frame = frame[~drop]
    if split == "patient":
        frame = frame.assign(**{SPLIT: patient_split(frame[schema.PATIENT_ID], valid_fraction, test_fraction, seed)})
    parts = split_frames(frame)
    written = write_splits(parts, output_dir, MIMIC_OUTPUT_COLUMNS)
    settings = {
        "drop_support_devices": drop_support_devices,
        "drop_incomplete_ehr": drop_incomplete_ehr,
        "split": split,
    }
    if split == "patient":
        settings.update(valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)
    summary = summarise(parts, schema.MIMIC_EHR_COLUMNS, extra={**counts, **settings})
    save_summary(summary, output_dir)
    print(format_summary(summary))
    progress(f"step5: wrote {', '.join(str(path) for path in written.values())}")
    return summary


def run_with_options(work_dir: Path, output_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run` with the options :func:`add_arguments` parsed (step 5 alone, or the last step of ``run_all``)."""
    return run(
        work_dir,
        output_dir,
        args.drop_support_devices,
        args.drop_incomplete_ehr,
        args.split,
        args.valid_fraction,
        args.test_fraction,
        args.seed,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Step 5 options, shared with ``run_all``."""
    parser.add_argument(
        "--drop-support-devices",
        action="store_true",
        help="drop studies labelled 'Support Devices' (not the authors' policy: their "
        "drop('Support Devices', axis=1) removes the label column and keeps these studies)",
    )
    parser.add_argument(
        "--drop-incomplete-ehr",
        action="store_true",
        help="keep only rows whose five EHR values are all present and non-zero (the authors' policy)",
    )
    parser.add_argument(
        "--split",
        choices=SPLIT_SOURCES,
        default="official",
        help="official MIMIC-CXR split, or a seeded patient-level re-split",
    )
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="with --split patient")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="with --split patient")
    parser.add_argument("--seed", type=int, default=0, help="with --split patient")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="folder holding step 4's existing.csv")
    parser.add_argument("--output", type=Path, required=True, help="folder for the final CSVs and summary.json")
    add_arguments(parser)
    args = parser.parse_args(argv)
    with exit_on_input_error():
        run_with_options(args.work_dir, args.output, args)


if __name__ == "__main__":
    main()
