"""Scoring split over 2 torchrun CPU processes (gloo standing in for NCCL) equals a one-process run, file for file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bundle.tiny_bundle import EVALUATE, run_workflow, scoring_overrides, tiny_overrides
from multi_gpu.torchrun_bundle import run_torchrun

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

SCORING = {"num_inference_steps": 2, "noise_level": 50, "noising": "stochastic", "num_bootstrap": 50, "batch_size": 5}


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
    run_torchrun(
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
    assert len(list((bundle / "runs").glob("*/test/events.out.tfevents.*"))) == 2
