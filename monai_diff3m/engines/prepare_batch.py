"""Batch preparation for MONAI's engines: what Diff3M's network and loss need from a collated batch."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.engines.utils import DiffusionPrepareBatch
from monai.networks.schedulers import Scheduler


def plain_tensor(value: Any) -> torch.Tensor:
    """A batch entry as a plain tensor: a ``MetaTensor`` pays a ``__torch_function__`` detour on every operation (the
    diffusion loop ran several times slower with one), and its metadata is not needed past the batch."""
    return value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)


class Diff3MPrepareBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` for Diff3M: draws t and ε, and carries the EHR and the clean image x₀.

    Returns ``(x₀, target, (), {"noise", "timesteps", "ehr", "ehr_missing", "x0"})`` for ``Diff3MDiffusionInferer``;
    the target is ε and x_t = q(x_t | x₀, ε) stacked on the channel axis, what ``Diff3MLoss`` compares ε̂ and the
    checkerboard reconstruction x̃_t with. ``__call__`` is MONAI's with the timesteps drawn before the noise, the
    order every seeded run of this project was made with, and with ``MetaTensor`` images unwrapped.

    Args:
        scheduler: the training noise schedule (``num_train_timesteps``, ``add_noise``).
        image_key: the image's key in the batch.
        ehr_key: the encoded EHR's key (its missing mask is ``<ehr_key>_missing``); absent keys give ``None``.
        seed: ``None`` draws from the global RNG, which ``monai.utils.set_determinism`` seeds, on the image's device.
            An integer draws each batch from a CPU generator seeded by ``seed`` and the batch's index in the epoch,
            so every validation pass sees the same t and ε on every device and its loss is comparable across epochs;
            the index is the engine's, so attach this object to the engine (list it among the engine's handlers).
    """

    def __init__(
        self, scheduler: Scheduler, image_key: str = "image", ehr_key: str = "ehr", seed: int | None = None
    ) -> None:
        super().__init__(num_train_timesteps=scheduler.num_train_timesteps)
        self.scheduler = scheduler
        self.image_key = image_key
        self.ehr_key = ehr_key
        self.seed = seed
        self._engine: Engine | None = None
        self._generator: torch.Generator | None = None

    def attach(self, engine: Engine) -> None:
        """Read the batch index of seeded draws from ``engine``."""
        self._engine = engine

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        draw_device = images.device if self._generator is None else torch.device("cpu")
        timesteps = torch.randint(
            0, self.num_train_timesteps, (images.shape[0],), generator=self._generator, device=draw_device
        )
        return timesteps.to(images.device)

    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        draw_device = images.device if self._generator is None else torch.device("cpu")
        noise = torch.randn(images.shape, generator=self._generator, dtype=images.dtype, device=draw_device)
        return noise.to(images.device)

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        noisy = self.scheduler.add_noise(original_samples=images, noise=noise, timesteps=timesteps)
        return torch.cat([noise, noisy], dim=1)

    def __call__(
        self,
        batchdata: dict[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, Any]]:
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no {self.image_key!r}; keys are {sorted(batchdata)}")
        images = plain_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        self._generator = self._batch_generator()
        timesteps = self.get_timesteps(images)
        noise = self.get_noise(images)
        target = self.get_target(images, noise, timesteps)
        ehr, missing = (
            None if value is None else plain_tensor(value).to(device=device, non_blocking=non_blocking)
            for value in (batchdata.get(self.ehr_key), batchdata.get(f"{self.ehr_key}_missing"))
        )
        inputs = {"noise": noise, "timesteps": timesteps, "ehr": ehr, "ehr_missing": missing, "x0": images}
        return images, target, (), inputs

    def _batch_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._engine is None:
            raise RuntimeError("a seeded Diff3MPrepareBatch reads the batch index from its engine: attach it first")
        state = self._engine.state
        batch_index = (state.iteration - 1) % max(state.epoch_length or 1, 1)
        return torch.Generator().manual_seed(self.seed * 100_003 + batch_index)
