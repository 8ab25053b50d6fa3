"""Static pixel-level checkerboard masking (PCM, docs/method.md §3).

The masks are fixed: the same complementary pixel checkerboards at every step, in training and at inference.
They act on the *noisy* input x_t, so they live beside the network rather than in the data pipeline.
"""

from __future__ import annotations

import torch


def checkerboard_masks(
    spatial_shape: tuple[int, int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (m1, m2) of shape (1, 1, H, W): m1(x, y) = (x + y) mod 2 and its complement m2 = 1 - m1."""
    height, width = spatial_shape
    rows = torch.arange(height, device=device).view(height, 1)
    columns = torch.arange(width, device=device).view(1, width)
    m1 = ((rows + columns) % 2).to(dtype).view(1, 1, height, width)
    return m1, 1.0 - m1


def soften_mask(mask: torch.Tensor, timesteps: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Timestep-dependent soft mask m·(1 − t/T) + t/T (the authors' code): hidden pixels are scaled by t/T, not zeroed.

    At high noise the hidden pixels carry little signal anyway, so the mask fades out; at t = 0 it is the hard mask.
    Returns shape (N, 1, H, W) for ``timesteps`` of shape (N,).
    """
    fraction = (timesteps.to(mask.dtype) / num_train_timesteps).view(-1, 1, 1, 1)
    return mask * (1.0 - fraction) + fraction
