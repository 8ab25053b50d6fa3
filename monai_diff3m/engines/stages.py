"""Two-stage training (docs/method.md §3): stage 2 starts from a stage-1 checkpoint with the PCM branches added."""

from __future__ import annotations

from pathlib import Path

import torch

from monai_diff3m.checkpoints import PCM_PREFIXES, load_state_dict_explained, read_checkpoint
from monai_diff3m.networks.diff3m_unet import Diff3MUNet


def start_stage2(
    network: Diff3MUNet, stage1_checkpoint: str | Path, map_location: str | torch.device = "cpu"
) -> Diff3MUNet:
    """Load a stage-1 checkpoint into a PCM network, copy its encoder into the PCM encoders and freeze.

    This is the authors' training run: it loads a pretrained checkpoint with ``strict=False`` (PCM weights the
    checkpoint lacks keep their initialisation), copies the main encoder into both PCM encoders and freezes the
    encoder, timestep embedding and x₀ encoder. How their pretrained checkpoint was made is not in the released
    code; the reference preset trains it with the same mixed loss and PCM branches (stage 1 with ``use_pcm``).
    """
    if not network.use_pcm:
        raise ValueError("stage 2 needs a network built with use_pcm=True")
    state = read_checkpoint(stage1_checkpoint, map_location)["network"]
    load_state_dict_explained(network, state, Path(stage1_checkpoint), ignore_missing=PCM_PREFIXES)
    network.start_pcm_stage()
    return network
