"""Iteration functions that plug Diff3M's noising, forward pass and loss into MONAI's engines.

MONAI's ``SupervisedTrainer``/``SupervisedEvaluator`` run the Ignite loop, handlers, AMP flags and metrics; the only
Diff3M-specific part, one diffusion step, is the ``iteration_update`` callable defined here. The forward pass goes
through the engine's ``inferer`` (MONAI's ``SimpleInferer`` in the bundle), as MONAI's own iteration does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.networks.schedulers import Scheduler

from monai_diff3m.engines.losses import Diff3MLoss
from monai_diff3m.inferers.anomaly import predict_x0
from monai_diff3m.networks.checkerboard import checkerboard_masks, soften_mask
from monai_diff3m.networks.diff3m_unet import Diff3MOutput
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE


def prepare_diff3m_batch(
    batchdata: dict[str, Any],
    device: torch.device | str,
    non_blocking: bool = False,
    image_key: str = "image",
    ehr_key: str = "ehr",
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Move the image, encoded EHR and missing mask of a collated batch to ``device`` as plain tensors.

    A ``MetaTensor`` image (evaluation keeps the affine for the NIfTI maps) is unwrapped: its metadata is not needed
    by the network, and every operation on a MetaTensor pays a ``__torch_function__`` detour (scoring ran several
    times slower with it).
    """
    if image_key not in batchdata:
        raise KeyError(f"batch has no {image_key!r}; keys are {sorted(batchdata)}")
    image = batchdata[image_key]
    image = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).to(
        device=device, non_blocking=non_blocking
    )
    ehr = batchdata.get(ehr_key)
    missing = batchdata.get(f"{ehr_key}_missing")
    ehr = None if ehr is None else torch.as_tensor(ehr).to(device=device, non_blocking=non_blocking)
    missing = None if missing is None else torch.as_tensor(missing).to(device=device, non_blocking=non_blocking)
    return image, ehr, missing


class _DiffusionStep:
    def __init__(
        self, scheduler: Scheduler, loss: Diff3MLoss | None = None, image_key: str = "image", ehr_key: str = "ehr"
    ) -> None:
        self.scheduler = scheduler
        self.loss = loss or Diff3MLoss()
        self.image_key = image_key
        self.ehr_key = ehr_key

    def _forward(
        self, engine: Any, batchdata: dict[str, Any], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Diff3MOutput]:
        image, ehr, missing = prepare_diff3m_batch(
            batchdata, engine.state.device, engine.non_blocking, self.image_key, self.ehr_key
        )
        # the global RNG draws on the image's device (no host copy per step); a seeded generator stays on the CPU,
        # so validation sees the same draws on every device
        draw_device = image.device if generator is None else torch.device("cpu")
        num_timesteps = self.scheduler.num_train_timesteps
        timesteps = torch.randint(0, num_timesteps, (image.shape[0],), generator=generator, device=draw_device)
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype, device=draw_device)
        timesteps, noise = timesteps.to(image.device), noise.to(image.device)
        noisy = self.scheduler.add_noise(original_samples=image, noise=noise, timesteps=timesteps)
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bool(engine.amp)):
            output = engine.inferer(noisy, engine.network, timesteps, ehr, missing, x0=image)
        return image, noise, noisy, timesteps, output


class Diff3MTrainingStep(_DiffusionStep):
    """``iteration_update`` for ``SupervisedTrainer``: sample t and ε, predict, mixed loss, optimiser step.

    Uses the global torch RNG, which ``monai.utils.set_determinism`` seeds, so a seeded run is reproducible.

    Asking whether the loss is finite makes the host wait for the device. ``finite_check_every`` > 1 therefore
    only accumulates the answer on the device and reads it every that many iterations and at the end of each
    epoch, so a run still stops before it checkpoints non-finite weights, only up to that many steps later.

    Args:
        scheduler: the noise schedule (``add_noise``, ``num_train_timesteps``).
        loss: the mixed loss; ``Diff3MLoss()`` when omitted.
        image_key: the image's key in the batch.
        ehr_key: the encoded EHR's key in the batch (its missing mask is ``<ehr_key>_missing``).
        finite_check_every: read the finite-loss flag every that many iterations (1: every step, as before).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        loss: Diff3MLoss | None = None,
        image_key: str = "image",
        ehr_key: str = "ehr",
        finite_check_every: int = 1,
    ) -> None:
        super().__init__(scheduler, loss, image_key, ehr_key)
        if finite_check_every < 1:
            raise ValueError(f"finite_check_every must be at least 1, got {finite_check_every}")
        self.finite_check_every = finite_check_every
        self._finite: torch.Tensor | None = None
        self._first_unchecked = 0

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        image, noise, noisy, timesteps, output = self._forward(engine, batchdata, generator=None)
        loss = self.loss(output, noise, noisy)
        self._check_finite(engine, loss.detach())
        loss.backward()
        engine.optimizer.step()
        return {"image": image, "loss": loss.detach()}

    def _check_finite(self, engine: Any, loss: torch.Tensor) -> None:
        iteration = engine.state.iteration
        finite = torch.isfinite(loss)
        if self._finite is None:
            self._finite, self._first_unchecked = finite, iteration
        else:
            self._finite &= finite
        epoch_length = engine.state.epoch_length or 0
        if iteration % self.finite_check_every and not (epoch_length and iteration % epoch_length == 0):
            return
        all_finite, self._finite = bool(self._finite), None
        if all_finite:
            return
        first = self._first_unchecked
        if first == iteration:
            raise FloatingPointError(f"training loss became {loss.item()} at iteration {iteration}")
        raise FloatingPointError(f"training loss became non-finite between iterations {first} and {iteration}")


class Diff3MValidationStep(_DiffusionStep):
    """``iteration_update`` for ``SupervisedEvaluator``: the training loss on fixed noise, plus images to look at.

    The noise and timesteps come from a generator seeded by ``seed`` and the batch index, so every validation pass
    sees the same draws and the validation loss is comparable across epochs. The output carries the input, the
    checkerboard-masked noisy input and the one-step estimate x̂₀ (clipped to ``image_range``) for the TensorBoard
    image grids.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        loss: Diff3MLoss | None = None,
        seed: int = 0,
        image_key: str = "image",
        ehr_key: str = "ehr",
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
    ) -> None:
        super().__init__(scheduler, loss, image_key, ehr_key)
        self.seed = seed
        self.image_range = tuple(image_range)

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        engine.network.eval()
        batch_index = (engine.state.iteration - 1) % max(engine.state.epoch_length or 1, 1)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + batch_index)
        with torch.no_grad():
            image, noise, noisy, timesteps, output = self._forward(engine, batchdata, generator)
            loss = self.loss(output, noise, noisy)
            m1, _ = checkerboard_masks((image.shape[-2], image.shape[-1]), device=image.device, dtype=image.dtype)
            alpha_bar = self.scheduler.alphas_cumprod.to(image.device)[timesteps].view(-1, 1, 1, 1).to(image.dtype)
            result = {
                "image": image,
                "loss": loss,
                "noisy": noisy,
                "masked": noisy * soften_mask(m1, timesteps, self.scheduler.num_train_timesteps),
                "x0_estimate": predict_x0(noisy, output.noise.float(), alpha_bar, self.image_range),
            }
            if output.reconstruction is not None:
                result["reconstruction"] = output.reconstruction.float()
        return result
