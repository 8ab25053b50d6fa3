"""EHR tokens and the pooled Image-EHR Cross-Attention (docs/method.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: ``token_norm``: one LayerNorm for every token, or one per EHR group (the authors' code: demographics, measurements).
TOKEN_NORMS = ("shared", "per_group")
#: ``token_init``: ``small`` draws W from 0.02·N(0, 1) with b = 0; ``normal`` draws W and b from N(0, 1) (the
#: default initialisation of the ``nn.Embedding`` tables the authors' tokenizers use).
TOKEN_INITS = ("small", "normal")


class EHRTokenizer(nn.Module):
    """One token per scalar EHR slot: ``token_i = LayerNorm(value_i · W_i + b_i)``.

    A one-hot slot that is 0 reduces to its bias, so a category is a learned vector. A slot flagged missing gets a
    learned per-slot "missing" vector instead, so the model is told that the value is unknown rather than 0.

    Args:
        num_slots: number of scalar EHR slots S.
        token_dim: token width d.
        group_sizes: slots per EHR group, in slot order (needed for ``norm="per_group"``); default one group.
        norm: one of ``TOKEN_NORMS``. LayerNorm normalises each token on its own, so the two differ only in the
            learned scale and shift: one pair for all tokens, or one pair per group.
        init: one of ``TOKEN_INITS``; LayerNorm removes the overall scale, so this sets how different the tokens
            start out relative to each other.

    Shapes: ``values`` and ``missing`` (N, S) -> tokens (N, S, d).
    """

    def __init__(
        self,
        num_slots: int,
        token_dim: int,
        group_sizes: Sequence[int] | None = None,
        norm: str = "shared",
        init: str = "small",
    ) -> None:
        super().__init__()
        if norm not in TOKEN_NORMS:
            raise ValueError(f"token norm must be one of {TOKEN_NORMS}, got {norm!r}")
        if init not in TOKEN_INITS:
            raise ValueError(f"token init must be one of {TOKEN_INITS}, got {init!r}")
        self.group_sizes = [num_slots] if group_sizes is None else list(group_sizes)
        if sum(self.group_sizes) != num_slots:
            raise ValueError(f"EHR group sizes {self.group_sizes} must add up to the {num_slots} slots")
        weight_std = 0.02 if init == "small" else 1.0
        self.weight = nn.Parameter(torch.randn(num_slots, token_dim) * weight_std)
        self.bias = nn.Parameter(
            torch.zeros(num_slots, token_dim) if init == "small" else torch.randn(num_slots, token_dim)
        )
        self.missing_embedding = nn.Parameter(torch.randn(num_slots, token_dim) * weight_std)
        self.token_norm = norm
        if norm == "shared":
            self.norm = nn.LayerNorm(token_dim)
        else:
            self.group_norms = nn.ModuleList(nn.LayerNorm(token_dim) for _ in self.group_sizes)

    @property
    def num_slots(self) -> int:
        return self.weight.shape[0]

    def forward(self, values: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        if values.ndim != 2 or values.shape[1] != self.num_slots:
            raise ValueError(f"EHR values must have shape (N, {self.num_slots}), got {tuple(values.shape)}")
        tokens = values.unsqueeze(-1) * self.weight + self.bias
        if missing is not None:
            tokens = torch.where(missing.unsqueeze(-1) > 0.5, self.missing_embedding.to(tokens.dtype), tokens)
        if self.token_norm == "shared":
            return self.norm(tokens)
        groups = tokens.split(self.group_sizes, dim=1)
        return torch.cat([norm(group) for norm, group in zip(self.group_norms, groups)], dim=1)


class PooledEHRAttention(nn.Module):
    """Pooled IECA: one image query attends over each group's tokens; the groups' weighted sums are added.

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
