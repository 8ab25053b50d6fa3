"""The scoring-schedule study on the tiny trained bundle: every schedule scored once, paired, resumable."""

import json

import pytest
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.experiments import scoring_study
from monai_diff3m.inferers import ScoringSchedule, size_matched_noise_level

from tiny_bundle import CONFIGS, TINY_NETWORK

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test


def _study(bundle_root, output, *steps: str) -> dict:
    grid = ["--ieca-mode", "pooled", "--noise-levels", "20", "60", "--tolerance", "0.005", "--steps", *steps]
    return scoring_study.main(["--bundle-root", str(bundle_root), "--output", str(output), *grid])


def test_study_scores_the_grid_recommends_within_tolerance_and_resumes(trained_bundle, tmp_path, monkeypatch):
    output = tmp_path / "study.json"
    summary = _study(trained_bundle, output, "3", "full")

    names = [result["name"] for result in summary["results"]]
    assert names == [
        "stochastic L=20 steps=3",
        "stochastic L=60 steps=3",
        "stochastic L=20 steps=full",
        "stochastic L=60 steps=full",
    ]
    assert [result["evaluations"] for result in summary["results"]] == [3, 3, 20, 60]
    assert summary["n"] == 32 and 0 < summary["n_abnormal"] < 32  # the tiny validation split
    config = json.loads((CONFIGS / "inference.json").read_text())  # evaluate.json takes its schedule from there
    level = size_matched_noise_level(
        config["noise_level_at_64"],
        TINY_NETWORK["image_size"],
        DDPMScheduler(1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02),
    )
    assert summary["bundle_default"] == f"{config['noising']} L={level} steps={config['num_inference_steps']}"
    aurocs = {result["name"]: result["scores"]["lung_mean"]["auroc"] for result in summary["results"]}
    assert all(0.0 <= value <= 1.0 for value in aurocs.values())
    best, chosen = max(aurocs.values()), aurocs[summary["recommended"]]
    assert aurocs[summary["best"]] == best and chosen >= best - 0.005
    recommended = next(r for r in summary["results"] if r["name"] == summary["recommended"])
    cheaper = [r for r in summary["results"] if r["evaluations"] < recommended["evaluations"]]
    assert all(r["scores"]["lung_mean"]["auroc"] < best - 0.005 for r in cheaper)
    assert json.loads(output.read_text())["recommended"] == summary["recommended"]

    scored = []
    original = scoring_study.score_schedule
    monkeypatch.setattr(
        scoring_study,
        "score_schedule",
        lambda schedule, *a, **k: scored.append(schedule) or original(schedule, *a, **k),
    )
    resumed = _study(trained_bundle, output, "1", "3", "full")
    assert scored == [ScoringSchedule("stochastic", 20, 1), ScoringSchedule("stochastic", 60, 1)]  # only the new ones
    assert [r["name"] for r in resumed["results"][:4]] == names
    assert [r["scores"]["lung_mean"]["auroc"] for r in resumed["results"][:4]] == list(aurocs.values())
