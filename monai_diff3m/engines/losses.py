"""The Diff3M training objective (docs/method.md §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_diff3m.networks.diff3m_unet import Diff3MOutput


class Diff3MLoss(nn.Module):
    """L = λ·MSE(ε̂, ε) + (1 − λ)·MSE(x̃_t, x_t); plain MSE(ε̂, ε) when the network has no PCM branches.

    Args:
        noise_weight: λ, the weight of the noise-prediction term (the authors' 0.5: ½·MSE + ½·MSE).
    """

    def __init__(self, noise_weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= noise_weight <= 1.0:
            raise ValueError(f"noise_weight (λ) must be within [0, 1], got {noise_weight}")
        self.noise_weight = noise_weight

    def forward(self, output: Diff3MOutput, noise: torch.Tensor, noisy_image: torch.Tensor) -> torch.Tensor:
        noise_loss = F.mse_loss(output.noise.float(), noise.float())
        if output.reconstruction is None:
            return noise_loss
        reconstruction_loss = F.mse_loss(output.reconstruction.float(), noisy_image.float())
        return self.noise_weight * noise_loss + (1.0 - self.noise_weight) * reconstruction_loss
