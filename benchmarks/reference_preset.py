"""Speed and memory of the reference preset (``reference.json``) at the paper's 256x256 size, through the bundle.

Each measurement is a subcommand, so that ``benchmarks/gpu_check.sh`` can bound each one with ``timeout``; each
adds its results to the JSON file ``--output``:

- ``train``: 200 optimiser steps of stage 1 of the reference preset (``train.json`` + ``reference.json``: PCM
  branches from the start, batch 3, AdamW, EMA) on generated phantoms, then 40 steps of stage 2
  (+ ``train_pcm.json``), each one epoch of that length. Optimiser steps per second (after ``WARMUP_STEPS``),
  images per second, peak memory, first and last loss.
- ``score``: the reference scoring (``reference_scoring.json``: DDIM inversion with the authors' indexing, x̃_t,
  clipping) of the test phantoms with the stage-2 model, on a shortened L; the time per network evaluation is
  extrapolated to the authors' 798 evaluations per image.
- ``batch``: a few optimiser steps at the authors' *global* batch (24 = 3 per GPU x 8 GPUs) on one device; running
  out of memory is a result too (``out_of_memory``).

``--tiny`` shrinks everything (32x32 images, a 2-level network, a handful of steps) to check the script on a CPU.

Usage::

    python benchmarks/reference_preset.py train --output results.json [--tiny]
    python benchmarks/reference_preset.py score --output results.json [--tiny]
    python benchmarks/reference_preset.py batch --output results.json [--tiny]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from monai_diff3m.io import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "bundles" / "diff3m" / "configs"
#: Steps excluded from the rate: CUDA initialisation, cuDNN autotuning and the first allocations.
WARMUP_STEPS = 5
#: The paper's 256x256 network comes from reference.json; ``--tiny`` replaces it by this one.
TINY = {
    "image_size": 32,
    "network_args#channels": [16, 32],
    "network_args#attention_levels": [False, True],
    "network_args#num_res_blocks": 1,
    "network_args#num_head_channels": 16,
    "network_args#norm_num_groups": 16,
}
#: The authors' global batch: 3 per GPU on 8 GPUs.
GLOBAL_BATCH = 24


def _configs(*names: str) -> list[str]:
    return [str(CONFIG_DIR / name) for name in names]


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _phantoms(size: int, num_train: int) -> dict[str, int]:
    return {"num_train": num_train, "num_val": 8, "num_test": 8, "image_size": size, "seed": 0}


def _settings(tiny: bool) -> dict[str, Any]:
    """Image size, network overrides, training phantoms and the optimiser steps of each stage and of ``batch``."""
    if tiny:
        return {"size": 32, "overrides": TINY, "num_train": 12, "steps": (8, 4, 2)}
    return {"size": 256, "overrides": {}, "num_train": 150, "steps": (200, 40, 12)}


def _one_epoch(steps: int) -> dict[str, Any]:
    """One epoch of ``steps`` optimiser steps (the data loader restarts as needed), validated and saved once."""
    return {"max_epochs": 1, "val_interval": 1, "train#trainer#epoch_length": steps}


def _train(configs: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """Run a training workflow; return its step rate after the warm-up, peak memory and losses."""
    workflow = ConfigWorkflow(config_file=configs, run_id="training", workflow_type=None, **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    stamps: list[float] = []
    losses: list[float] = []

    def record(engine) -> None:
        _synchronize()
        stamps.append(time.perf_counter())
        losses.append(float(engine.state.output["loss"]))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    _reset_peak()
    started = time.perf_counter()
    workflow.run()
    wall = time.perf_counter() - started
    workflow.finalize()
    batch = int(workflow.parser.get_parsed_content("batch_size"))
    timed = stamps[WARMUP_STEPS:] if len(stamps) > WARMUP_STEPS + 1 else stamps
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else None
    return {
        "steps": len(stamps),
        "batch": batch,
        "timed_steps": len(timed) - 1,
        "steps_per_s": steps_per_s,
        "images_per_s": None if steps_per_s is None else steps_per_s * batch,
        "peak_mib": _peak_mib(),
        "wall_s_including_data_and_validation": round(wall, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def train(root: Path, tiny: bool) -> dict[str, Any]:
    settings = _settings(tiny)
    common = {
        "bundle_root": str(root),
        "phantoms": _phantoms(settings["size"], settings["num_train"]),
        **settings["overrides"],
    }
    started = time.perf_counter()
    stage1_steps, stage2_steps, _ = settings["steps"]
    stage1 = _train(_configs("train.json", "reference.json"), {**common, **_one_epoch(stage1_steps)})
    stage2 = _train(_configs("train.json", "reference.json", "train_pcm.json"), {**common, **_one_epoch(stage2_steps)})
    return {
        "image_size": settings["size"],
        "train_images": settings["num_train"],
        "stage1": stage1,
        "stage2": stage2,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }


def score(root: Path, tiny: bool) -> dict[str, Any]:
    """Reference scoring of the 8 test phantoms in batches of 4; the second batch is timed (the first warms up)."""
    noise_level = 6 if tiny else 21
    configs = _configs("inference.json", "evaluate.json", "reference_scoring.json")
    workflow = ConfigWorkflow(
        config_file=configs,
        run_id="evaluating",
        workflow_type=None,
        bundle_root=str(root),
        noise_level=noise_level,
        batch_size=4,
        num_bootstrap=10,
        output_dir=str(root / "eval" / "reference"),
        overwrite=True,
    )
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("evaluator")
    inferer = workflow.parser.get_parsed_content("inferer")
    evaluations = len(inferer.inversion_steps) + len(inferer.denoising_steps)
    spans: list[float] = []

    def started(engine) -> None:
        _synchronize()
        spans.append(-time.perf_counter())

    def completed(engine) -> None:
        _synchronize()
        spans.append(spans.pop() + time.perf_counter())

    evaluator.add_event_handler(Events.ITERATION_STARTED, started)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, completed)
    _reset_peak()
    workflow.run()
    workflow.finalize()
    seconds_per_image = spans[-1] / 4
    full = 2 * (400 - 1)
    return {
        "noise_level": noise_level,
        "evaluations_per_image": evaluations,
        "batch": 4,
        "seconds_per_evaluation_per_image": seconds_per_image / evaluations,
        "reference_seconds_per_image": seconds_per_image / evaluations * full,
        "reference_evaluations_per_image": full,
        "peak_mib": _peak_mib(),
    }


def batch(root: Path, tiny: bool) -> dict[str, Any]:
    """A few steps at the global batch on the training phantoms of ``train`` (12 steps; 2 with ``--tiny``)."""
    settings = _settings(tiny)
    phantoms = root / "data" / "phantoms"
    size = 4 if tiny else GLOBAL_BATCH
    overrides = {
        "bundle_root": str(root / "global_batch"),
        "train_csv": str(phantoms / "train.csv"),
        "val_csv": str(phantoms / "valid.csv"),
        "image_root": str(phantoms),
        "batch_size": size,
        **_one_epoch(settings["steps"][2]),
        **settings["overrides"],
    }
    try:
        return {"global_batch": _train(_configs("train.json", "reference.json"), overrides)}
    except torch.cuda.OutOfMemoryError as error:
        return {"global_batch": {"batch": size, "out_of_memory": str(error).splitlines()[0], "peak_mib": _peak_mib()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["train", "score", "batch"])
    parser.add_argument("--output", type=Path, required=True, help="JSON file the results are added to")
    parser.add_argument("--root", type=Path, help="bundle root for data and models (default: beside --output)")
    parser.add_argument("--tiny", action="store_true", help="32x32 and a few steps: a CPU check of the script")
    args = parser.parse_args(argv)
    args.output = args.output.resolve()
    root = (args.root or args.output.parent / "reference_preset_bundle").resolve()
    result = {"train": train, "score": score, "batch": batch}[args.part](root, args.tiny)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    results["torch"] = torch.__version__
    results[args.part] = result
    write_json_atomic(results, args.output)
    print(json.dumps({args.part: result}, indent=2))
    return results


if __name__ == "__main__":
    main()
