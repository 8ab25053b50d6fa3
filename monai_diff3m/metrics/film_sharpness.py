"""Film sharpness, the confound a reconstruction score can measure instead of the anomaly.

A schedule that reconstructs a film too faithfully (DDIM inversion nearly inverts itself) leaves a residual made of
the fine detail the network smooths away: ribs, vessels, film grain, edges. Its score then grows with the film's
high-frequency content, whatever its anatomy. Where abnormal films are softer than normal ones (an opacity blurs
the lung; bedside films are softer than department films) such a score reads *below* chance. The variance of the
Laplacian is the standard measure of that content; ``scoring_study`` reports each score's rank correlation with it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """Variance of the 4-neighbour Laplacian of each image (N, 1, H, W) over its interior pixels, shape (N,)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {tuple(images.shape)}")
    kernel = _LAPLACIAN.to(images.device, torch.float32).view(1, 1, 3, 3)
    return F.conv2d(images.float(), kernel).flatten(1).var(dim=1)


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (0.0 when either is constant)."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first, second).statistic)
