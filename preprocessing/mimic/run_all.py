r"""Run the five MIMIC steps in order: MIMIC-CXR-JPG 2.0.0 + MIMIC-IV 3.1 -> the bundles' CSVs.

Intermediate files go to ``--work-dir`` (default ``<output>/work``), so any single step can be rerun afterwards
with its own command (``python -m monai_diff3m.preprocessing.mimic.step3_join ...``) after changing its options.

Usage::

    python -m monai_diff3m.preprocessing.mimic.run_all --mimic-cxr /data/mimic-cxr-jpg/2.0.0 \
        --mimic-iv /data/mimiciv/3.1 --output /data/mimic_csv
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common import exit_on_input_error
from . import (
    step1_omr_ehr,
    step2_concatenate,
    step3_join,
    step4_filter_existing,
    step5_summarise,
)

__all__ = ["run_all", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-cxr", type=Path, required=True, help="MIMIC-CXR-JPG 2.0.0 root")
    parser.add_argument("--mimic-iv", type=Path, required=True, help="MIMIC-IV 3.1 root (holding hosp/)")
    parser.add_argument("--output", type=Path, required=True, help="folder for the final CSVs and summary.json")
    parser.add_argument("--work-dir", type=Path, help="folder for intermediate files (default: <output>/work)")
    for step in (step1_omr_ehr, step3_join, step4_filter_existing, step5_summarise):
        step.add_arguments(parser)
    return parser


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run steps 1-5 with the options parsed by :func:`build_parser`; return step 5's summary."""
    work_dir = args.work_dir or args.output / "work"
    step1_omr_ehr.run(
        args.mimic_cxr, args.mimic_iv, work_dir, args.window_days, args.part_images, args.chunk_rows, args.omr_names
    )
    step2_concatenate.run(work_dir)
    step3_join.run(args.mimic_cxr, args.mimic_iv, work_dir, args.uncertain_policy, args.age)
    step4_filter_existing.run(args.mimic_cxr, work_dir, check_files=not args.skip_existence_check)
    return step5_summarise.run_with_options(work_dir, args.output, args)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error():
        run_all(args)


if __name__ == "__main__":
    main()
