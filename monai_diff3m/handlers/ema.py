"""Exponential moving average (EMA) of the network weights, the authors' ``ema_rate = 0.9999``.

Diffusion models usually sample better from an EMA of their weights than from the last iterate. The authors' code
keeps one (without warm-up) and saves it beside the raw weights; which of the two their sampling loaded is not in
the released code. A decay of 0.9999 averages over about 10 000 optimiser steps: with the few hundred steps of a
CPU demo the average would still be almost the random initial weights. ``warmup`` therefore caps the decay at
(1 + n) / (10 + n) after n updates, so early on the EMA follows the weights closely and it converges to the
authors' decay on long runs (n ≈ 90 000 for 0.9999).
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler


def warmup_decay(decay: float, num_updates: int) -> float:
    """The decay of update ``num_updates + 1``: ``decay``, capped at (1 + n) / (10 + n) after n updates."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class WarmupEMAHandler(EMAHandler):
    """Ignite's ``EMAHandler`` with the warm-up above, counted from the trainer's iteration.

    Ignite's own warm-up is linear over a fixed number of iterations and counts its own calls, which restart at 0
    when a run is resumed; this one reads n from the trainer's iteration, which ``ResumeFromCheckpoint`` restores,
    so a resumed run continues the warm-up where it stopped. ``ema_model`` has the network's parameter names, so it
    can be saved as a set of network weights or used for validation. Buffers are shared with the network.

    Ignite updates the average one parameter at a time: two kernels per parameter, 2,418 launches per step for
    the reference network. This handler does the same arithmetic (``ema·(1 − m) + w·m``, bit for bit) with
    ``torch._foreach_*`` ops, which batch every parameter of one device and dtype into a few launches.

    Args:
        model: the trained network (unwrapped: not DDP nor ``torch.compile``, so the names stay plain).
        decay: EMA decay per optimiser step (the authors': 0.9999); ignite's ``momentum`` is ``1 - decay``.
        warmup: cap the decay at (1 + n) / (10 + n) after n updates, see the module docstring.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(model, momentum=1.0 - decay)
        self.decay = decay
        self.warmup = warmup
        self._ema_parameters: list[torch.Tensor] = list(self.ema_model.parameters())
        self._parameters = [parameter.detach() for parameter in self.model.parameters()]

    def attach(self, engine: Engine, name: str = "ema_momentum") -> None:  # type: ignore[override]
        """Set the momentum of each iteration before ignite's update, which reads it from ``engine.state.<name>``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._set_momentum, name)
        super().attach(engine, name, warn_if_exists=False, event=Events.ITERATION_COMPLETED)

    def _set_momentum(self, engine: Engine, name: str) -> None:
        decay = warmup_decay(self.decay, engine.state.iteration - 1) if self.warmup else self.decay
        setattr(engine.state, name, 1.0 - decay)

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        """Ignite's update (``handle_buffers="copy"``: the buffers are the network's), with foreach ops."""
        momentum = getattr(engine.state, name)
        with torch.no_grad():
            torch._foreach_mul_(self._ema_parameters, 1.0 - momentum)
            torch._foreach_add_(self._ema_parameters, self._parameters, alpha=momentum)
        for ema_buffer, buffer in zip(self.ema_model.buffers(), self.model.buffers()):
            ema_buffer.data = buffer.data
