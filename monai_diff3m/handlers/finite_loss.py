"""Stop a training run whose loss is no longer finite, before it checkpoints non-finite weights."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys


class FiniteLossCheck:
    """After each loss (``IterationEvents.LOSS_COMPLETED``, before the backward pass), raise ``FloatingPointError``
    if it is not finite.

    Asking whether the loss is finite makes the host wait for the device. ``check_every`` > 1 therefore only
    accumulates the answer on the device and reads it every that many iterations and at the end of each epoch, so
    a run still stops before it checkpoints non-finite weights, only up to that many steps later.

    Args:
        check_every: read the finite-loss flag every that many iterations (1: every step).
    """

    def __init__(self, check_every: int = 1) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}")
        self.check_every = check_every
        self._finite: torch.Tensor | None = None
        self._first_unchecked = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS].detach()  # type: ignore[index]
        iteration = engine.state.iteration
        finite = torch.isfinite(loss)
        if self._finite is None:
            self._finite, self._first_unchecked = finite, iteration
        else:
            self._finite &= finite
        epoch_length = engine.state.epoch_length or 0
        if iteration % self.check_every and not (epoch_length and iteration % epoch_length == 0):
            return
        all_finite, self._finite = bool(self._finite), None
        if all_finite:
            return
        first = self._first_unchecked
        if first == iteration:
            raise FloatingPointError(f"training loss became {loss.item()} at iteration {iteration}")
        raise FloatingPointError(f"training loss became non-finite between iterations {first} and {iteration}")
