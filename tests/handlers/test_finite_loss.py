"""The finite-loss check on MONAI's stock trainer: read every N iterations and at the end of each epoch."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from monai_diff3m.handlers import FiniteLossCheck

from trainer_parts import tiny_trainer


def _trainer(check: FiniteLossCheck, epoch_length: int, epochs: int, bad_iteration: int) -> SupervisedTrainer:
    """A trainer for ``epochs`` epochs of ``epoch_length`` batches, the ``bad_iteration``-th on a NaN image."""
    batches = []
    for iteration in range(1, epoch_length + 1):
        image = torch.zeros(2, 1, 16, 16)
        if iteration == bad_iteration:
            image[0, 0, 0, 0] = float("nan")
        batches.append({"image": image})
    return tiny_trainer(batches, max_epochs=epochs, handlers=[check])


def test_every_iteration_check_stops_at_the_first_non_finite_loss_before_its_step():
    with pytest.raises(FloatingPointError, match="became nan at iteration 2$"):
        _trainer(FiniteLossCheck(), epoch_length=100, epochs=1, bad_iteration=2).run()
    trainer = _trainer(FiniteLossCheck(), epoch_length=1, epochs=1, bad_iteration=1)
    before = [parameter.detach().clone() for parameter in trainer.network.parameters()]
    with pytest.raises(FloatingPointError, match="at iteration 1$"):
        trainer.run()
    # the check runs on LOSS_COMPLETED, before the backward pass: the weights never took the NaN step
    assert all(torch.equal(after, original) for after, original in zip(trainer.network.parameters(), before))


def test_check_every_n_reads_the_flag_at_the_next_multiple_of_n():
    trainer = _trainer(FiniteLossCheck(check_every=4), epoch_length=100, epochs=1, bad_iteration=6)
    with pytest.raises(FloatingPointError, match="non-finite between iterations 5 and 8$"):
        trainer.run()
    assert trainer.state.iteration == 8


def test_check_every_n_also_reads_the_flag_at_the_end_of_an_epoch_before_checkpoints():
    with pytest.raises(FloatingPointError, match="between iterations 1 and 3$"):
        _trainer(FiniteLossCheck(check_every=10), epoch_length=3, epochs=4, bad_iteration=2).run()
    clean = _trainer(FiniteLossCheck(check_every=10), epoch_length=3, epochs=4, bad_iteration=0)
    clean.run()
    assert clean.state.iteration == 12
    with pytest.raises(ValueError, match="at least 1"):
        FiniteLossCheck(check_every=0)
