"""Two-stage training (METHOD.md §3): stage 2 starts from a stage-1 checkpoint with the PCM branches added."""

from __future__ import annotations

from pathlib import Path

import torch

from monai_diff3m.networks.diff3m_unet import Diff3MUNet

PCM_PREFIXES = ("pcm_encoders.", "pcm_decoder.")


def load_network_weights(network: torch.nn.Module, checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the ``"network"`` entry of a checkpoint written by ``CheckpointWriter``, explaining any mismatch."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} not found")
    checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    state = checkpoint.get("network", checkpoint)
    mismatch = network.load_state_dict(state, strict=False)
    _explain_mismatch(checkpoint_path, network, mismatch.missing_keys, mismatch.unexpected_keys)
    return network


def start_stage2(network: Diff3MUNet, stage1_checkpoint: str | Path, map_location: str | torch.device = "cpu") -> Diff3MUNet:
    """Load the stage-1 ε-UNet into a PCM network, copy its encoder into the PCM encoders and freeze (reference)."""
    if not network.use_pcm:
        raise ValueError("stage 2 needs a network built with use_pcm=True")
    checkpoint = torch.load(Path(stage1_checkpoint), map_location=map_location, weights_only=True)
    state = checkpoint.get("network", checkpoint)
    mismatch = network.load_state_dict(state, strict=False)
    missing = [key for key in mismatch.missing_keys if not key.startswith(PCM_PREFIXES)]
    _explain_mismatch(Path(stage1_checkpoint), network, missing, mismatch.unexpected_keys)
    network.start_pcm_stage()
    return network


def _explain_mismatch(path: Path, network: torch.nn.Module, missing: list[str], unexpected: list[str]) -> None:
    if not missing and not unexpected:
        return
    hints = []
    if any(key.startswith(PCM_PREFIXES) for key in missing):
        hints.append("the checkpoint has no PCM branches (a stage-1 model): load it with use_pcm=False or run stage 2")
    if any(key.startswith(PCM_PREFIXES) for key in unexpected):
        hints.append("the checkpoint has PCM branches: build the network with use_pcm=True")
    tokenizer_keys = ("ehr_tokenizer.", "image_encoder.", "pooled_attention.", "condition_")
    if any(key.startswith(tokenizer_keys) or ".attn2." in key for key in missing + unexpected):
        mode = getattr(network, "ieca_mode", "?")
        hints.append(f"the checkpoint was trained with a different ieca_mode or EHR groups than this network ({mode!r})")
    raise ValueError(
        f"checkpoint {path} does not fit the network: {len(missing)} missing key(s) (e.g. {missing[:3]}), "
        f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]}). " + ("; ".join(hints) or "check channels/attention settings")
    )
