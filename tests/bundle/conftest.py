"""Shared tiny bundle runs: one tiny phantom dataset and one trained tiny model for every bundle test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from tiny_bundle import CONFIGS, tiny_overrides


@dataclass
class TrainedBundle:
    """A bundle root holding tiny phantoms and a tiny trained stage-1 pooled model, with its training history."""

    root: Path
    val_losses: list[float]
    iterations: int


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedBundle:
    """Train the tiny model once per session (288 optimiser steps) and record the validation loss per check."""
    bundle_root = tmp_path_factory.mktemp("bundle")
    overrides = tiny_overrides(bundle_root, max_epochs=24, val_interval=4, batch_size=8, learning_rate=0.002)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), run_id="training", workflow_type=None, **overrides
    )
    workflow.initialize()
    losses: list[float] = []
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: losses.append(engine.state.metrics["val_loss"]))
    workflow.run()
    workflow.finalize()
    iterations = workflow.parser.get_parsed_content("train#trainer").state.iteration
    return TrainedBundle(bundle_root, losses, iterations)


@pytest.fixture(scope="session")
def trained_bundle(trained: TrainedBundle) -> Path:
    return trained.root
