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

#: Optimizer settings a resumed run takes from its own configuration rather than from the checkpoint.
_HYPER_PARAMETERS = ("lr", "weight_decay", "betas", "eps")
#: Metadata a resume may change: bookkeeping, and attention kernels that compute the same function.
_RUN_ONLY_SETTINGS = ("best_metric", "ehr_statistics_file")
_RUN_ONLY_NETWORK_ARGS = ("use_flash_attention",)


def _without_run_only(value: Any) -> Any:
    """``network_args`` without the arguments a resume may change; lists and tuples alike; other values as they are."""
    if isinstance(value, Mapping):
        return {key: _without_run_only(item) for key, item in value.items() if key not in _RUN_ONLY_NETWORK_ARGS}
    if isinstance(value, (list, tuple)):
        return [_without_run_only(item) for item in value]
    return value


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

    A resume continues the same model or refuses: with ``metadata`` (this run's, as :class:`CheckpointWriter`
    stores it), a setting that shaped the trained weights (``image_size``, ``intensity_mode``, ranges, EHR groups,
    network arguments) and differs from the checkpoint's is an error naming both values, instead of a checkpoint
    whose metadata describes weights trained otherwise. The optimizer's hyper-parameters (``lr``,
    ``weight_decay``, ``betas``, ``eps``) are this run's: a changed ``--learning_rate`` is applied after loading the
    optimizer state (which would restore the old one) and logged with both values.

    Args:
        load_path: the ``last.pt`` written with ``resumable=True``.
        load_dict: objects with ``load_state_dict``, keyed as in the checkpoint, e.g.
            ``{"network": net, "optimizer": opt}``.
        evaluator: the validation engine whose ``best_metric`` decides when ``best_path`` is written.
        best_path: the best checkpoint of the interrupted run; its ``best_metric`` metadata and epoch are restored.
        map_location: device the checkpoint tensors are loaded to before being copied into the objects.
        metadata: this run's checkpoint metadata, compared with the checkpoint's (``None``: not compared).

    Raises:
        FileNotFoundError: ``load_path`` does not exist (nothing to resume).
        ValueError: the file has no trainer state, its progress does not fit this run (other data or fewer epochs),
            or it was trained with other settings than ``metadata``.
    """

    def __init__(
        self,
        load_path: str | Path,
        load_dict: Mapping[str, Any],
        evaluator: Engine | None = None,
        best_path: str | Path | None = None,
        map_location: str | torch.device = "cpu",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.evaluator = evaluator
        self.best_path = None if best_path is None else Path(best_path)
        self.map_location = map_location
        self.metadata = None if metadata is None else dict(metadata)

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
        self._check_settings(checkpoint.get("metadata", {}))
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                load_state_dict_explained(obj, checkpoint[name], self.load_path)
            elif isinstance(obj, torch.optim.Optimizer):
                self._load_optimizer(obj, checkpoint[name], engine)
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

    def _check_settings(self, trained: Mapping[str, Any]) -> None:
        """Refuse a resume whose settings would change what the checkpoint's weights mean."""
        if self.metadata is None:
            return
        conflicts = [
            f"{name} is {self.metadata.get(name)!r} in this run, {trained.get(name)!r} in the checkpoint"
            for name in sorted(set(self.metadata) | set(trained))
            if name not in _RUN_ONLY_SETTINGS
            and _without_run_only(self.metadata.get(name)) != _without_run_only(trained.get(name))
        ]
        if conflicts:
            raise ValueError(
                f"cannot resume from {self.load_path}: {'; '.join(conflicts)}. Resume with the checkpoint's settings, "
                "or start a new training without --resume"
            )

    def _load_optimizer(self, optimizer: torch.optim.Optimizer, state: Mapping[str, Any], engine: Engine) -> None:
        """Load the optimizer state but keep this run's hyper-parameters, logging each one that changed."""
        requested = [{key: group[key] for key in _HYPER_PARAMETERS if key in group} for group in optimizer.param_groups]
        optimizer.load_state_dict(dict(state))
        for group, wanted in zip(optimizer.param_groups, requested):
            for key, value in wanted.items():
                if group[key] != value:
                    engine.logger.info(
                        f"resuming with this run's optimizer {key} {value!r} (the checkpoint's run used {group[key]!r})"
                    )
                    group[key] = value

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
