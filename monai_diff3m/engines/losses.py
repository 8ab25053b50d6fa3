"""The Diff3M training objective (docs/method.md §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_diff3m.networks.diff3m_unet import split_prediction


class Diff3MLoss(nn.Module):
    """L = λ·MSE(ε̂, ε) + (1 − λ)·MSE(x̃_t, x_t); plain MSE(ε̂, ε) when the network has no PCM branches.

    Called as MONAI's engines call a loss, ``loss(prediction, target)``: ``prediction`` is what
    ``Diff3MDiffusionInferer`` returns (ε̂, with x̃_t stacked after it on the channel axis when the network has PCM)
    and ``target`` what ``Diff3MPrepareBatch`` prepares (ε and x_t stacked the same way).

    Args:
        noise_weight: λ, the weight of the noise-prediction term (the authors' 0.5: ½·MSE + ½·MSE).
    """

    def __init__(self, noise_weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= noise_weight <= 1.0:
            raise ValueError(f"noise_weight (λ) must be within [0, 1], got {noise_weight}")
        self.noise_weight = noise_weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        noise, noisy_image = target.chunk(2, dim=1)
        predicted_noise, reconstruction = split_prediction(prediction, noise.shape[1])
        noise_loss = F.mse_loss(predicted_noise.float(), noise.float())
        if reconstruction is None:
            return noise_loss
        reconstruction_loss = F.mse_loss(reconstruction.float(), noisy_image.float())
        return self.noise_weight * noise_loss + (1.0 - self.noise_weight) * reconstruction_loss
