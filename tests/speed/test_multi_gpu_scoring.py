"""Scoring split over 2 torchrun CPU processes (gloo standing in for NCCL) equals a one-process run, file for file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bundle.tiny_bundle import CONFIGS, EVALUATE, REPO_ROOT, run_workflow, scoring_overrides, tiny_overrides

SCORING = {"num_inference_steps": 2, "noise_level": 50, "noising": "stochastic", "num_bootstrap": 50, "batch_size": 5}


def _torchrun(tmp_path: Path, configs: list[str], run_id: str, overrides: dict) -> str:
    args_file = tmp_path / f"{run_id}_args.json"
    args_file.write_text(json.dumps(overrides))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        str([str(CONFIGS / name) for name in configs]),
        "--args_file",
        str(args_file),
    ]
    # this checkout's package, whatever an installed one (the workers start in tmp_path)
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
    assert process.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle with a tiny model trained for one epoch: any weights will do for comparing two scoring runs."""
    root = tmp_path_factory.mktemp("bundle")
    run_workflow("train.json", "training", tiny_overrides(root, max_epochs=1, val_interval=1))
    return root


def test_two_processes_write_the_scores_maps_and_metrics_of_one(bundle, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_workflow(EVALUATE, "evaluating", scoring_overrides(bundle, output_dir=str(one), write_maps=True, **SCORING))
    configs = [*EVALUATE, "multi_gpu_inference.json", "multi_gpu_evaluate.json"]
    _torchrun(
        tmp_path, configs, "evaluating", scoring_overrides(bundle, output_dir=str(two), write_maps=True, **SCORING)
    )

    expected, merged = pd.read_csv(one / "scores.csv"), pd.read_csv(two / "scores.csv")
    assert len(expected) == 48
    pd.testing.assert_frame_equal(merged, expected, rtol=1e-5)
    assert all((two / path).is_file() for path in merged["map_nifti"]) and all(
        (two / path).is_file() for path in merged["map_overlay"]
    )
    metrics_one = json.loads((one / "metrics.json").read_text())
    metrics_two = json.loads((two / "metrics.json").read_text())
    assert metrics_two.keys() == metrics_one.keys() and metrics_two["n"] == 48
    for name, values in metrics_one["scores"].items():
        assert metrics_two["scores"][name]["auroc"] == pytest.approx(values["auroc"], abs=1e-6), name
        assert metrics_two["scores"][name]["auroc_interval"] == pytest.approx(values["auroc_interval"], abs=1e-6)
    assert metrics_two["pixel"]["pixel_auroc"] == pytest.approx(metrics_one["pixel"]["pixel_auroc"], abs=1e-6)
    assert pd.read_csv(two / "failures.csv").equals(pd.read_csv(one / "failures.csv"))
    assert sorted(p.name for p in two.glob("*.csv")) == ["failures.csv", "scores.csv"]
    # rank 0 alone writes TensorBoard logs
    assert len(list((bundle / "runs").glob("eval_*/events.out.tfevents.*"))) == 2
