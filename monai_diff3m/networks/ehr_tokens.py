"""EHR tokens and the pooled Image-EHR Cross-Attention (METHOD.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class EHRTokenizer(nn.Module):
    """One token per scalar EHR slot: ``token_i = LayerNorm(value_i · W_i + b_i)``.

    A one-hot slot that is 0 reduces to its bias, so a category is a learned vector. A slot flagged missing gets a
    learned per-slot "missing" vector instead, so the model is told that the value is unknown rather than 0.

    Args:
        num_slots: number of scalar EHR slots S.
        token_dim: token width d.

    Shapes: ``values`` and ``missing`` (N, S) -> tokens (N, S, d).
    """

    def __init__(self, num_slots: int, token_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_slots, token_dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_slots, token_dim))
        self.missing_embedding = nn.Parameter(torch.randn(num_slots, token_dim) * 0.02)
        self.norm = nn.LayerNorm(token_dim)

    @property
    def num_slots(self) -> int:
        return self.weight.shape[0]

    def forward(self, values: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        if values.ndim != 2 or values.shape[1] != self.num_slots:
            raise ValueError(f"EHR values must have shape (N, {self.num_slots}), got {tuple(values.shape)}")
        tokens = values.unsqueeze(-1) * self.weight + self.bias
        if missing is not None:
            tokens = torch.where(missing.unsqueeze(-1) > 0.5, self.missing_embedding.to(tokens.dtype), tokens)
        return self.norm(tokens)


class PooledEHRAttention(nn.Module):
    """Reference IECA: one image query attends over each group's tokens; the groups' weighted sums are added.

    Attention weights are a softmax over the tokens *within* each group (demographics, measurements), so they read
    as "which feature of this group the image relied on" and are returned for per-feature attribution.

    Args:
        group_sizes: number of tokens in each group, in token order.
        token_dim: token and query width d.

    Shapes: query (N, d), tokens (N, S, d) -> condition (N, d), weights (N, S).
    """

    def __init__(self, group_sizes: Sequence[int], token_dim: int) -> None:
        super().__init__()
        self.group_sizes = list(group_sizes)
        self.scale = token_dim**-0.5

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.einsum("nsd,nd->ns", tokens, query) * self.scale
        weights = torch.cat([group.softmax(dim=1) for group in logits.split(self.group_sizes, dim=1)], dim=1)
        condition = torch.einsum("ns,nsd->nd", weights, tokens)
        return condition, weights
