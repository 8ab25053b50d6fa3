"""Exponential moving average (EMA) of the network weights, the authors' ``ema_rate = 0.9999``.

Diffusion models usually sample better from an EMA of their weights than from the last iterate. The authors' code
keeps one (without warm-up) and saves it beside the raw weights; which of the two their sampling loaded is not in
the released code. A decay of 0.9999 averages over about 10 000 optimiser steps: with the few hundred steps of a
CPU demo the average would still be almost the random initial weights. ``warmup`` therefore caps the decay at
(1 + n) / (10 + n) after n updates, so early on the EMA follows the weights closely and it converges to the
authors' decay on long runs (n ≈ 90 000 for 0.9999).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events


class EMAWeights:
    """Ignite handler keeping ``ema_network``, an EMA copy of ``network``, updated after every iteration.

    The copy is made at construction (so before training) and never receives gradients. It has the network's
    parameter names, so its ``state_dict`` is a drop-in set of network weights: put the handler in a
    ``CheckpointWriter``'s ``save_dict`` to save the EMA weights, or validate with ``ema_network``.

    Args:
        network: the trained network (unwrapped: not DDP nor ``torch.compile``, so the names stay plain).
        decay: EMA decay per optimiser step (the authors': 0.9999).
        warmup: cap the decay at (1 + n) / (10 + n) after n updates, see the module docstring.
    """

    def __init__(self, network: torch.nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.network = network
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.ema_network = copy.deepcopy(network).eval().requires_grad_(False)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        """ema ← decay·ema + (1 − decay)·weights for parameters; buffers (e.g. norm statistics) are copied."""
        weight = 1.0 - self.current_decay()
        for average, current in zip(self.ema_network.parameters(), self.network.parameters()):
            average.lerp_(current.detach(), weight)
        for average, current in zip(self.ema_network.buffers(), self.network.buffers()):
            average.copy_(current)
        self.num_updates += 1

    def __call__(self, engine: Engine) -> None:
        """Update after the trainer's iteration n, which is the n-th update: the trainer's iteration is restored on
        resume (the EMA weights are too, through the checkpoint), so the warm-up continues where it stopped."""
        self.num_updates = engine.state.iteration - 1
        self.update()

    def state_dict(self) -> dict[str, Any]:
        """The EMA weights, with the network's own parameter names."""
        return self.ema_network.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.ema_network.load_state_dict(state_dict)
