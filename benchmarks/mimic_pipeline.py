"""Wall time and peak memory of the MIMIC preprocessing pipeline on synthetic tables of realistic size.

Generates MIMIC-CXR-JPG / MIMIC-IV tables with the real schemas (default 300k images, 5M ``omr`` rows, gzip) in a
temporary folder, then runs step 1 alone (the heavy ``omr`` join) and the whole pipeline without the image
existence check (no JPEGs exist). Each phase runs in its own process so that its peak RSS
(``resource.getrusage``) is its own. Prints one JSON object. Target: under 2 minutes and 4 GiB on 2 cores.

Usage::

    python benchmarks/mimic_pipeline.py [--images 300000] [--omr-rows 5000000] [--folder /tmp/bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PHASES = ("generate", "step1", "pipeline")


def _run_phase(phase: str, folder: Path, images: int, omr_rows: int) -> None:
    """Run one phase in this process and print its wall time and peak RSS as JSON."""
    from monai_diff3m.preprocessing.mimic import run_all, step1_omr_ehr
    from monai_diff3m.preprocessing.mimic.synthetic import write_synthetic_mimic

    mimic_cxr, mimic_iv, output = folder / "mimic-cxr-jpg", folder / "mimiciv", folder / "output"
    start = time.perf_counter()
    if phase == "generate":
        write_synthetic_mimic(mimic_cxr, mimic_iv, images=images, omr_rows=omr_rows)
    elif phase == "step1":
        step1_omr_ehr.run(mimic_cxr, mimic_iv, folder / "step1_work")
    else:
        arguments = [
            "--mimic-cxr",
            str(mimic_cxr),
            "--mimic-iv",
            str(mimic_iv),
            "--output",
            str(output),
            "--skip-existence-check",
        ]
        run_all.run_all(run_all.build_parser().parse_args(arguments))
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": round(wall, 1), "peak_rss_mib": round(peak_kib / 1024)}))


def _measure(phase: str, folder: Path, images: int, omr_rows: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--folder",
        str(folder),
        "--images",
        str(images),
        "--omr-rows",
        str(omr_rows),
    ]
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300_000, help="images in the synthetic metadata")
    parser.add_argument("--omr-rows", type=int, default=5_000_000, help="rows of the synthetic omr table")
    parser.add_argument("--folder", type=Path, help="where to generate (default: a temporary folder, removed)")
    parser.add_argument("--phase", choices=_PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _run_phase(args.phase, args.folder, args.images, args.omr_rows)
        return
    with tempfile.TemporaryDirectory(prefix="mimic_benchmark_") as temporary:
        folder = args.folder or Path(temporary)
        report = {"images": args.images, "omr_rows": args.omr_rows}
        report.update({phase: _measure(phase, folder, args.images, args.omr_rows) for phase in _PHASES})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
