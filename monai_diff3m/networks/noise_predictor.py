"""A single-tensor view of ``Diff3MUNet`` for tools that call ``net(image)``, such as ``verify_net_in_out``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from monai_diff3m.networks.diff3m_unet import Diff3MUNet


class Diff3MNoisePredictor(nn.Module):
    """``forward(x, timesteps=None, ehr=None, ehr_missing=None) -> ε̂`` with neutral defaults.

    MONAI's bundle checks feed one image tensor and read ``output.shape``; Diff3M needs timesteps and EHR and returns
    a NamedTuple. Defaults: timestep 0, every EHR slot flagged missing (the learned "missing" tokens), x₀ = x.
    Its weights carry the wrapped network's names, so a Diff3M checkpoint's ``network`` entry loads into either
    (``ckpt_export --key_in_ckpt network``).
    """

    def __init__(self, network: Diff3MUNet) -> None:
        super().__init__()
        self.network = network

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = x.shape[0]
        if timesteps is None:
            timesteps = torch.zeros(batch, dtype=torch.long, device=x.device)
        num_slots = sum(self.network.ehr_group_sizes)
        if ehr is None and num_slots:
            ehr = torch.zeros(batch, num_slots, dtype=x.dtype, device=x.device)
            ehr_missing = torch.ones_like(ehr)
        return self.network(x, timesteps, ehr, ehr_missing, x0=x).noise

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)
