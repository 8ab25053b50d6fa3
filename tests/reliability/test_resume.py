"""A training run killed with SIGKILL continues from its last checkpoint with ``--resume true``, as users run it."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

from monai_diff3m.handlers import CheckpointWriter
from monai_diff3m.handlers.checkpoint import ResumeFromCheckpoint

from bundle.tiny_bundle import CONFIGS, TINY_PHANTOMS, tiny_overrides

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

MAX_EPOCHS = 6
#: Two batches of 16 per epoch keep each run to seconds; the resume logic does not depend on the epoch length.
PHANTOMS = {**TINY_PHANTOMS, "num_train": 32, "num_val": 16, "num_test": 16}
ITERATIONS_PER_EPOCH = 32 // 16


def _overrides(bundle_root: Path, **extra) -> dict:
    return tiny_overrides(bundle_root, phantoms=PHANTOMS, **extra)


def _train_command(args_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(CONFIGS / "train.json"),
        "--args_file",
        str(args_file),
        *extra,
    ]


def _losses(bundle_root: Path, max_epochs: int, resume: bool, **extra) -> list[tuple[int, float]]:
    """Run the tiny training in this process and return (iteration, loss) of every step it ran."""
    overrides = _overrides(bundle_root, max_epochs=max_epochs, val_interval=1, resume=resume, **extra)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), run_id="training", workflow_type=None, **overrides
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    losses: list[tuple[int, float]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda engine: losses.append((engine.state.iteration, engine.state.output["loss"].item())),
    )
    workflow.run()
    workflow.finalize()
    return losses


def test_killed_training_resumes_from_the_last_checkpoint(tmp_path):
    bundle_root = tmp_path / "bundle"
    args_file = tmp_path / "tiny.json"
    args_file.write_text(json.dumps(_overrides(bundle_root, max_epochs=MAX_EPOCHS, val_interval=2)))
    last = bundle_root / "models" / "diff3m_pooled_last.pt"

    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(_train_command(args_file), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    killed_epoch = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= killed_epoch < MAX_EPOCHS

    resumed = subprocess.run(
        _train_command(args_file, "--resume", "true"), check=False, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert f"at epoch {killed_epoch}, iteration {killed_epoch * ITERATIONS_PER_EPOCH}" in log
    assert f"SupervisedTrainer - INFO - Epoch[{killed_epoch + 1}] Complete" in log
    assert "SupervisedTrainer - INFO - Epoch[1] Complete" not in log
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == MAX_EPOCHS
    assert checkpoint["trainer"]["iteration"] == MAX_EPOCHS * ITERATIONS_PER_EPOCH
    assert {"network", "optimizer", "metadata", "rng"} <= set(checkpoint)


@pytest.mark.parametrize("deterministic", [False, True])
def test_resumed_run_continues_the_same_loss_curve(tmp_path, deterministic):
    """Weights, optimiser moments, progress and RNG are all restored: the losses equal those of an unbroken run.

    Both settings of ``deterministic`` (on a GPU it picks cuDNN's algorithms; a CPU run is exact either way).
    """
    unbroken = _losses(tmp_path / "unbroken", max_epochs=2, resume=False, deterministic=deterministic)
    first = _losses(tmp_path / "interrupted", max_epochs=1, resume=False, deterministic=deterministic)
    second = _losses(tmp_path / "interrupted", max_epochs=2, resume=True, deterministic=deterministic)
    assert [iteration for iteration, _ in second] == list(range(ITERATIONS_PER_EPOCH + 1, 2 * ITERATIONS_PER_EPOCH + 1))
    assert first + second == unbroken


def _resume(path: Path, batches: int, max_epochs: int) -> Engine:
    trainer = Engine(lambda engine, batch: None)
    ResumeFromCheckpoint(path, {"network": torch.nn.Linear(2, 2)}).attach(trainer)
    trainer.run(range(batches), max_epochs=max_epochs)
    return trainer


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    last = tmp_path / "last.pt"
    with pytest.raises(FileNotFoundError, match="start training without --resume"):
        _resume(last, batches=3, max_epochs=2)
    CheckpointWriter(tmp_path, {"network": torch.nn.Linear(2, 2)}, "last.pt")(
        SimpleNamespace(state=SimpleNamespace(epoch=1))
    )
    with pytest.raises(ValueError, match="not written with resumable=True"):
        _resume(last, batches=3, max_epochs=2)
    interrupted = Engine(lambda engine, batch: None)
    CheckpointWriter(tmp_path, {"network": torch.nn.Linear(2, 2)}, "last.pt", resumable=True).attach(interrupted)
    interrupted.run(range(3), max_epochs=3)
    with pytest.raises(ValueError, match="3 iterations per epoch, this run has 4"):
        _resume(last, batches=4, max_epochs=4)
    with pytest.raises(ValueError, match="already trained 3 epochs, more than --max_epochs 2"):
        _resume(last, batches=3, max_epochs=2)
    assert _resume(last, batches=3, max_epochs=3).state.iteration == 9  # a finished run has nothing left to do


def test_resume_keeps_the_best_metric_of_the_interrupted_run(tmp_path):
    network = torch.nn.Linear(2, 2)
    interrupted = Engine(lambda engine, batch: None)
    CheckpointWriter(tmp_path, {"network": network}, "last.pt", resumable=True).attach(interrupted)
    interrupted.run(range(3), max_epochs=2)
    best_writer = CheckpointWriter(tmp_path, {"network": network}, "best.pt", only_on_best=True)

    for best_epoch, restored in [(1, (0.25, 1)), (5, (-1, -1))]:  # a best from epoch 5 belongs to another run
        best_writer(
            SimpleNamespace(state=SimpleNamespace(epoch=best_epoch, best_metric_epoch=best_epoch, best_metric=0.25))
        )
        evaluator = SimpleNamespace(state=SimpleNamespace(best_metric=-1, best_metric_epoch=-1))
        trainer = Engine(lambda engine, batch: None)
        ResumeFromCheckpoint(tmp_path / "last.pt", {"network": network}, evaluator, tmp_path / "best.pt").attach(
            trainer
        )
        trainer.run(range(3), max_epochs=2)
        assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == restored


def _workflow(bundle_root: Path, **extra) -> ConfigWorkflow:
    overrides = _overrides(bundle_root, val_interval=1, **extra)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), run_id="training", workflow_type=None, **overrides
    )
    workflow.initialize()
    return workflow


def test_resume_applies_a_changed_learning_rate_and_refuses_a_changed_image_size(tmp_path):
    """``--resume true --learning_rate 0.5`` logged the new rate while the optimizer kept the old one, and a resume
    with another ``image_size`` or ``intensity_mode`` rewrote the metadata of weights trained otherwise."""
    first = _workflow(tmp_path, max_epochs=1)
    first.run()
    first.finalize()
    last = tmp_path / "models" / "diff3m_pooled_last.pt"
    trained = torch.load(last, weights_only=True)["metadata"]

    for setting, value, was in (("image_size", 16, 32), ("intensity_mode", "fixed", "percentile")):
        changed = _workflow(tmp_path, max_epochs=2, resume=True, **{setting: value})
        with pytest.raises(RuntimeError) as refused:  # MONAI wraps the trainer's error
            changed.run()
        changed.finalize()
        assert f"{setting} is {value!r} in this run, {was!r} in the checkpoint" in str(refused.value.__cause__)
        assert torch.load(last, weights_only=True)["metadata"] == trained

    resumed = _workflow(tmp_path, max_epochs=2, resume=True, learning_rate=0.5)
    messages: list[str] = []
    trainer = resumed.parser.get_parsed_content("train#trainer")
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    trainer.logger.addHandler(handler)
    resumed.run()
    resumed.finalize()
    assert [group["lr"] for group in resumed.parser.get_parsed_content("optimizer").param_groups] == [0.5]
    assert "resuming with this run's optimizer lr 0.5 (the checkpoint's run used 0.001)" in messages
