"""TensorBoard scalars a person watching a training run looks for beside the loss: learning rate and speed."""

from __future__ import annotations

import time
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter


class TrainingRateHandler:
    """After each training epoch, log ``train/learning_rate`` and ``train/images_per_second``.

    The speed counts the images of the epoch's iterations over the time from the epoch's start to its last iteration,
    so the validation that runs at the epoch's end (``ValidationHandler``) does not lower it.

    Args:
        summary_writer: the training run's ``SummaryWriter``.
        optimizer: the optimiser whose first parameter group's learning rate is logged.
        image_key: batch key of the images, to count them.
    """

    def __init__(self, summary_writer: SummaryWriter, optimizer: torch.optim.Optimizer, image_key: str = "image"):
        self.writer = summary_writer
        self.optimizer = optimizer
        self.image_key = image_key
        self._started = 0.0
        self._last_iteration = 0.0
        self._images = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _start(self, engine: Engine) -> None:
        self._started = self._last_iteration = time.perf_counter()
        self._images = 0

    def _count(self, engine: Engine) -> None:
        batch: Any = engine.state.batch
        self._images += len(batch[self.image_key]) if isinstance(batch, dict) else 0
        self._last_iteration = time.perf_counter()

    def _log(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        self.writer.add_scalar("train/learning_rate", self.optimizer.param_groups[0]["lr"], epoch)
        elapsed = self._last_iteration - self._started
        if elapsed > 0 and self._images:
            self.writer.add_scalar("train/images_per_second", self._images / elapsed, epoch)
