"""Atomic, resumable checkpoints: a crash while saving never leaves a truncated ``last.pt`` or ``best.pt``, and a
killed training run continues from its last ``last.pt`` with ``--resume true``.

Kept instead of the libraries' savers: MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a kill
mid-write corrupts the only copy; Ignite's ``Checkpoint`` with an atomic ``DiskSaver`` deletes a same-named
``last.pt`` before writing its replacement, so a kill between the two leaves none; and neither MONAI's
``CheckpointLoader`` nor Ignite restores the random generators, which decide the noise, timesteps and batch order of
every later step, nor explains a checkpoint from another configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_diff3m.checkpoints import load_state_dict_explained, read_checkpoint
from monai_diff3m.errors import MissingInputError
from monai_diff3m.io import atomic_path
from monai_diff3m.rng_state import capture_rng_state, restore_rng_state


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
        resumable: also save the attached engine's progress (``"trainer"``: Ignite ``state_dict``) and the random
            generators (``"rng"``), which :class:`ResumeFromCheckpoint` needs to continue training.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        only_on_best: bool = False,
        metadata: Mapping[str, Any] | None = None,
        resumable: bool = False,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.only_on_best = only_on_best
        self.metadata = dict(metadata or {})
        self.resumable = resumable

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state: Any = engine.state  # MONAI's evaluators add best_metric and best_metric_epoch to Ignite's state
        if self.only_on_best and getattr(state, "best_metric_epoch", -1) != state.epoch:
            return
        content = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        content["epoch"] = engine.state.epoch
        content["metadata"] = self.metadata
        if self.only_on_best:
            content["metadata"] = {**self.metadata, "best_metric": float(state.best_metric)}
        if self.resumable:
            content["trainer"] = dict(engine.state_dict())
            content["rng"] = capture_rng_state()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temporary:
            torch.save(content, temporary)


class ResumeFromCheckpoint:
    """Continue an interrupted training run from a ``resumable`` :class:`CheckpointWriter` file.

    Attached to the trainer, it runs at ``Events.STARTED``: it loads the network (explaining a checkpoint from another
    configuration), the other ``load_dict`` objects (optimizer), the trainer's iteration and epoch, and the random
    generators, so the run continues where the checkpoint was written, as if it had never stopped. The trainer keeps
    its own ``max_epochs``, so a finished run can also be extended with a larger ``--max_epochs``. With an
    ``evaluator`` and an existing ``best_path``, the best validation metric so far is restored as well, so the first
    validation after resuming does not overwrite a better ``best.pt``.

    Args:
        load_path: the ``last.pt`` written with ``resumable=True``.
        load_dict: objects with ``load_state_dict``, keyed as in the checkpoint, e.g.
            ``{"network": net, "optimizer": opt}``.
        evaluator: the validation engine whose ``best_metric`` decides when ``best_path`` is written.
        best_path: the best checkpoint of the interrupted run; its ``best_metric`` metadata and epoch are restored.
        map_location: device the checkpoint tensors are loaded to before being copied into the objects.

    Raises:
        FileNotFoundError: ``load_path`` does not exist (nothing to resume).
        ValueError: the file has no trainer state, or its progress does not fit this run (other data or fewer epochs).
    """

    def __init__(
        self,
        load_path: str | Path,
        load_dict: Mapping[str, Any],
        evaluator: Engine | None = None,
        best_path: str | Path | None = None,
        map_location: str | torch.device = "cpu",
    ) -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.evaluator = evaluator
        self.best_path = None if best_path is None else Path(best_path)
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.load_path.is_file():
            raise MissingInputError(f"cannot resume: {self.load_path} does not exist; start training without --resume")
        checkpoint = read_checkpoint(self.load_path, self.map_location)
        if "trainer" not in checkpoint or "rng" not in checkpoint:
            raise ValueError(
                f"cannot resume from {self.load_path}: it has no trainer and RNG state "
                "(not written with resumable=True)"
            )
        progress = checkpoint["trainer"]
        if progress["epoch_length"] != engine.state.epoch_length:
            raise ValueError(
                f"cannot resume from {self.load_path}: it was trained with {progress['epoch_length']} iterations "
                "per epoch, "
                f"this run has {engine.state.epoch_length} (other training data or batch size)"
            )
        epoch = progress["iteration"] // progress["epoch_length"]
        if epoch > engine.state.max_epochs:
            raise ValueError(
                f"cannot resume from {self.load_path}: it already trained {epoch} epochs, "
                f"more than --max_epochs {engine.state.max_epochs}"
            )
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                load_state_dict_explained(obj, checkpoint[name], self.load_path)
            else:
                obj.load_state_dict(checkpoint[name])
        engine.load_state_dict(
            {
                "iteration": progress["iteration"],
                "epoch_length": progress["epoch_length"],
                "max_epochs": engine.state.max_epochs,
            }
        )
        self._restore_best_metric(engine.state.epoch)
        restore_rng_state(checkpoint["rng"])
        engine.logger.info(
            f"resumed from {self.load_path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        )

    def _restore_best_metric(self, epoch: int) -> None:
        """Take over the interrupted run's best metric; a best checkpoint from a later epoch belongs to another run."""
        if self.evaluator is None or self.best_path is None or not self.best_path.is_file():
            return
        best = read_checkpoint(self.best_path, self.map_location)
        if best["epoch"] > epoch or "best_metric" not in best.get("metadata", {}):
            return
        evaluator_state: Any = self.evaluator.state
        evaluator_state.best_metric = best["metadata"]["best_metric"]
        evaluator_state.best_metric_epoch = best["epoch"]
