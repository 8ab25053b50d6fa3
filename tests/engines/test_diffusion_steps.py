"""The training step's finite-loss check, read every N iterations and at the end of each epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.engines import Diff3MTrainingStep
from monai_diff3m.networks import Diff3MUNet


def _engine(epoch_length: int) -> SimpleNamespace:
    torch.manual_seed(0)
    network = Diff3MUNet(
        ieca_mode="none", channels=(8, 16), attention_levels=(False, False), num_head_channels=8, norm_num_groups=8
    )
    return SimpleNamespace(
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
        inferer=SimpleInferer(),
        non_blocking=False,
        amp=False,
        state=SimpleNamespace(device=torch.device("cpu"), iteration=0, epoch_length=epoch_length),
    )


def _train(step: Diff3MTrainingStep, engine: SimpleNamespace, iterations: int, bad_iteration: int) -> int:
    """Run ``iterations`` steps, the ``bad_iteration``-th on a NaN image; return the last iteration that ran."""
    for iteration in range(1, iterations + 1):
        engine.state.iteration = iteration
        image = torch.zeros(2, 1, 16, 16)
        if iteration == bad_iteration:
            image[0, 0, 0, 0] = float("nan")
        step(engine, {"image": image})
    return iteration


def test_every_iteration_check_stops_at_the_first_non_finite_loss():
    step = Diff3MTrainingStep(DDPMScheduler(num_train_timesteps=1000))
    with pytest.raises(FloatingPointError, match="became nan at iteration 2$"):
        _train(step, _engine(epoch_length=100), iterations=8, bad_iteration=2)


def test_check_every_n_reads_the_flag_at_the_next_multiple_of_n():
    step = Diff3MTrainingStep(DDPMScheduler(num_train_timesteps=1000), finite_check_every=4)
    engine = _engine(epoch_length=100)
    with pytest.raises(FloatingPointError, match="non-finite between iterations 5 and 8$"):
        _train(step, engine, iterations=12, bad_iteration=6)
    assert engine.state.iteration == 8


def test_check_every_n_also_reads_the_flag_at_the_end_of_an_epoch_before_checkpoints():
    step = Diff3MTrainingStep(DDPMScheduler(num_train_timesteps=1000), finite_check_every=10)
    engine = _engine(epoch_length=3)
    with pytest.raises(FloatingPointError, match="between iterations 1 and 3$"):
        _train(step, engine, iterations=12, bad_iteration=2)
    clean = Diff3MTrainingStep(DDPMScheduler(num_train_timesteps=1000), finite_check_every=10)
    assert _train(clean, _engine(epoch_length=3), iterations=12, bad_iteration=0) == 12
    with pytest.raises(ValueError, match="at least 1"):
        Diff3MTrainingStep(DDPMScheduler(num_train_timesteps=1000), finite_check_every=0)
