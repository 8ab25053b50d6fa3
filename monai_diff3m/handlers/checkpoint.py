"""Atomic checkpoints: a crash while saving never leaves a truncated ``last.pt`` or ``best.pt``.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a kill mid-write corrupts the only copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_diff3m.io import atomic_path


class CheckpointWriter:
    """Save ``{name: obj.state_dict()}`` plus metadata to ``save_dir/filename`` atomically.

    Attach to the trainer (every epoch, ``last.pt``) or to the evaluator with ``only_on_best=True`` (``best.pt``,
    written when the evaluator's key metric improved in this run).

    Args:
        save_dir: output folder, created if needed.
        save_dict: objects with ``state_dict`` to save, e.g. ``{"network": net, "optimizer": opt}``.
        filename: file name inside ``save_dir``.
        only_on_best: save only when the attached engine's ``best_metric_epoch`` is the current epoch.
        metadata: JSON-like values stored beside the weights (configuration, EHR groups) for inference checks.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        only_on_best: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.only_on_best = only_on_best
        self.metadata = dict(metadata or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.only_on_best and getattr(engine.state, "best_metric_epoch", -1) != engine.state.epoch:
            return
        content = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        content["epoch"] = engine.state.epoch
        content["metadata"] = self.metadata
        if self.only_on_best:
            content["metadata"] = {**self.metadata, "best_metric": float(engine.state.best_metric)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temporary:
            torch.save(content, temporary)
