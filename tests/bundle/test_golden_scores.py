"""Golden run: a tiny seeded two-stage training and a scoring run whose numbers are pinned.

A refactoring of the network, engines, inferers or configs must leave these numbers as they are (issue 18: "scores
unchanged"). The run goes through the bundle's own configs, as a user's ``run training`` does: stage 1 (pooled IECA,
EMA), stage 2 from its best checkpoint (PCM branches, mixed loss, frozen encoder), then ``inference.json`` on the
stage-2 model, which takes x̂₀ from the checkerboard reconstruction.

Pinned on CPU with one thread, which the run sets for itself: a rerun gives the same bits. Another thread count
or CPU sums in another order; two threads moved the scores by up to 6e-4 (relative) after the 8 training steps,
hence the tolerances. A change of method moves them by far more (another draw order of t and ε: about 10%).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from monai_diff3m.inferers import SCORE_NAMES

from tiny_bundle import config_files, scoring_overrides, tiny_overrides

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

GOLDEN_PHANTOMS = {"num_train": 16, "num_val": 8, "num_test": 8, "image_size": 32, "seed": 0}
TRAINING = {"max_epochs": 2, "val_interval": 1, "batch_size": 8, "learning_rate": 0.002}
SCORING = {"num_inference_steps": 3, "noise_level": 100}

#: Per stage: the training loss of every iteration and the validation loss of every epoch.
GOLDEN_LOSSES = {
    "stage1": {
        "train": [0.9998136758804321, 0.9630855321884155, 0.8558894991874695, 0.7865584492683411],
        "val": [0.8768433332443237, 0.7411831617355347],
    },
    "stage2": {
        "train": [0.8097022771835327, 0.7325319051742554, 0.6617336273193359, 0.6120184659957886],
        "val": [0.6506816744804382, 0.532811164855957],
    },
}
#: scores.csv of the stage-2 model on the 8 test phantoms, in file order.
GOLDEN_SCORES = {
    "anomaly_score": [
        0.004014039412140846,
        0.0037077050656080246,
        0.004157862160354853,
        0.004654697608202696,
        0.004341679625213146,
        0.004998381249606609,
        0.004381583072245121,
        0.004302509129047394,
    ],
    "mse": [
        0.007412477396428585,
        0.0068525285460054874,
        0.0071195876225829124,
        0.00872134417295456,
        0.007810352370142937,
        0.009371919557452202,
        0.008006402291357517,
        0.007782997563481331,
    ],
    "mse_normalized": [
        0.0015591862611472607,
        0.0014096389058977365,
        0.0014116906095296144,
        0.001829691231250763,
        0.0015975479036569595,
        0.002078641438856721,
        0.00168457196559757,
        0.001656695967540145,
    ],
    "max": [
        0.2111474871635437,
        0.19547730684280396,
        0.19920599460601807,
        0.22386318445205688,
        0.20866751670837402,
        0.2122390866279602,
        0.21464121341705322,
        0.19542181491851807,
    ],
    "max_normalized": [
        0.10701341927051544,
        0.10062636435031891,
        0.0813482254743576,
        0.11636051535606384,
        0.10209977626800537,
        0.10993501543998718,
        0.11173047125339508,
        0.09988829493522644,
    ],
    "p99_smoothed": [
        0.15657076239585876,
        0.13928842544555664,
        0.18136709928512573,
        0.1682964414358139,
        0.18200841546058655,
        0.17452429234981537,
        0.16368107497692108,
        0.1744987666606903,
    ],
    "lung_mean": [
        0.03381919115781784,
        0.03515908867120743,
        0.034072961658239365,
        0.03886440768837929,
        0.032469816505908966,
        0.04025156423449516,
        0.03660361468791962,
        0.034056223928928375,
    ],
    "lowpass_mse": [
        0.004014039412140846,
        0.0037077050656080246,
        0.004157862160354853,
        0.004654697608202696,
        0.004341679625213146,
        0.004998381249606609,
        0.004381583072245121,
        0.004302509129047394,
    ],
}
#: Relative tolerances: losses, and scores (which carry the training differences through 6 DDIM steps).
LOSS_RTOL, SCORE_RTOL, ATOL = 2e-4, 2e-3, 1e-7


def _train(configs: list[str], overrides: dict) -> dict[str, list[float]]:
    workflow = ConfigWorkflow(config_file=config_files(*configs), run_id="training", workflow_type=None, **overrides)
    workflow.initialize()
    losses: dict[str, list[float]] = {"train": [], "val": []}
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: losses["train"].append(float(engine.state.output["loss"]))
    )
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda engine: losses["val"].append(engine.state.metrics["val_loss"])
    )
    workflow.run()
    workflow.finalize()
    return losses


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory) -> tuple[dict[str, dict[str, list[float]]], pd.DataFrame]:
    root = tmp_path_factory.mktemp("golden")
    overrides = tiny_overrides(root, phantoms=GOLDEN_PHANTOMS, **TRAINING)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = {
            "stage1": _train(["train.json"], overrides),
            "stage2": _train(["train.json", "train_pcm.json"], overrides),
        }
        workflow = ConfigWorkflow(
            config_file=config_files("inference.json"),
            run_id="run",
            workflow_type=None,
            **scoring_overrides(root, use_pcm=True, output_dir=str(root / "scores"), **SCORING),
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    finally:
        torch.set_num_threads(threads)
    return losses, pd.read_csv(root / "scores" / "scores.csv")


def test_training_losses_are_the_golden_ones(golden_run):
    losses, _ = golden_run
    for stage, expected in GOLDEN_LOSSES.items():
        assert len(losses[stage]["train"]) == 4 and len(losses[stage]["val"]) == 2, stage
        assert losses[stage]["train"] == pytest.approx(expected["train"], rel=LOSS_RTOL, abs=ATOL), stage
        assert losses[stage]["val"] == pytest.approx(expected["val"], rel=LOSS_RTOL, abs=ATOL), stage


def test_every_image_score_is_the_golden_one(golden_run):
    _, scores = golden_run
    assert len(scores) == 8 and set(GOLDEN_SCORES) == {"anomaly_score", *SCORE_NAMES}
    for column, expected in GOLDEN_SCORES.items():
        assert list(scores[column]) == pytest.approx(expected, rel=SCORE_RTOL, abs=ATOL), column
