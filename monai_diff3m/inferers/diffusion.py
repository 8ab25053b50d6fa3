"""Diff3M's training forward pass as a MONAI ``DiffusionInferer`` (docs/method.md §3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import Scheduler

from monai_diff3m.inferers.ddim import predict_x0
from monai_diff3m.inferers.precision import network_autocast
from monai_diff3m.networks.checkerboard import checkerboard_masks, soften_mask
from monai_diff3m.networks.diff3m_unet import split_prediction
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE


class Diff3MDiffusionInferer(DiffusionInferer):
    """Noise x₀ to x_t and predict ε̂ and, when the network has PCM branches, the checkerboard reconstruction x̃_t.

    Called by MONAI's ``SupervisedTrainer``/``SupervisedEvaluator`` with what ``Diff3MPrepareBatch`` returns; the
    prediction (ε̂, with x̃_t stacked after it on the channel axis) goes to ``Diff3MLoss``, the mixed loss
    λ·MSE(ε̂, ε) + (1 − λ)·MSE(x̃_t, x_t). The checkerboard masking of x_t happens inside the network.

    Args:
        scheduler: the training noise schedule (``add_noise``).
        autocast_dtype: run the network under autocast to this dtype (``torch.bfloat16``) on the input's device, CPU
            included; the prediction comes back in float32. None: float32 throughout.
    """

    def __init__(self, scheduler: Scheduler, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__(scheduler)
        self.autocast_dtype = autocast_dtype

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        return self._predict(noisy, diffusion_model, timesteps, ehr, ehr_missing, x0)

    def _predict(
        self,
        noisy: torch.Tensor,
        diffusion_model: torch.nn.Module,
        timesteps: torch.Tensor,
        ehr: torch.Tensor | None,
        ehr_missing: torch.Tensor | None,
        x0: torch.Tensor | None,
    ) -> torch.Tensor:
        """ε̂ of x_t, with x̃_t stacked after it when the network has PCM branches, in float32."""
        with network_autocast(noisy.device.type, self.autocast_dtype):
            prediction = diffusion_model(noisy, timesteps, ehr, ehr_missing, x0=x0, with_reconstruction=True)
        return prediction.float()

    def sample(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Not for Diff3M: MONAI's sampler passes ``context``; a twin comes from ``Diff3MAnomalyInferer``'s DDIM."""
        raise NotImplementedError("Diff3M denoises with Diff3MAnomalyInferer (DDIM inversion and denoising)")


class Diff3MValidationInferer(Diff3MDiffusionInferer):
    """The training forward pass plus the images a validation pass shows in TensorBoard.

    Returns a dict: ``prediction`` (what ``Diff3MDiffusionInferer`` returns, for the loss), the ``noisy`` input x_t,
    the ``masked`` input x_t·m₁' one checkerboard branch sees, the one-step estimate ``x0_estimate`` (x̂₀ from x_t and
    ε̂, clipped to ``image_range``) and, with PCM, the ``reconstruction`` x̃_t.

    Args:
        scheduler: the training noise schedule.
        image_range: intensity range of the images, which x̂₀ is clipped to.
        autocast_dtype: as ``Diff3MDiffusionInferer``'s.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(scheduler, autocast_dtype)
        self.image_range = tuple(float(bound) for bound in image_range)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: torch.nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        prediction = self._predict(noisy, diffusion_model, timesteps, ehr, ehr_missing, x0)
        predicted_noise, reconstruction = split_prediction(prediction, inputs.shape[1])
        m1, _ = checkerboard_masks((inputs.shape[-2], inputs.shape[-1]), device=inputs.device, dtype=inputs.dtype)
        alpha_bar = self.scheduler.alphas_cumprod.to(inputs.device)[timesteps].view(-1, 1, 1, 1).to(inputs.dtype)
        result = {
            "prediction": prediction,
            "noisy": noisy,
            "masked": noisy * soften_mask(m1, timesteps, self.scheduler.num_train_timesteps),
            "x0_estimate": predict_x0(noisy, predicted_noise, alpha_bar, self.image_range),
        }
        if reconstruction is not None:
            result["reconstruction"] = reconstruction
        return result
