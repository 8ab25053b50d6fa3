"""Tiny bundle settings and a runner that executes a config the way ``python -m monai.bundle run`` does."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "diff3m"
CONFIGS = BUNDLE / "configs"
#: ``evaluate.json`` is an overlay of ``inference.json``: the two are merged, as ``--config_file "[...]"`` does.
EVALUATE = ["inference.json", "evaluate.json"]
TINY_PHANTOMS = {"num_train": 96, "num_val": 32, "num_test": 48, "image_size": 32, "seed": 0}
#: A 32x32 model small enough that a few hundred steps take seconds on 2 CPU cores.
TINY_NETWORK = {
    "image_size": 32,
    "network_args#channels": [16, 32],
    "network_args#attention_levels": [False, True],
    "network_args#num_head_channels": 16,
    "network_args#norm_num_groups": 16,
}


def tiny_overrides(bundle_root: Path, **extra) -> dict:
    """Training overrides: the reference (pooled) IECA, which exercises the image query and per-group attention."""
    return {
        "bundle_root": str(bundle_root),
        "ieca_mode": "pooled",
        "phantoms": TINY_PHANTOMS,
        "batch_size": 16,
        "amp": False,  # float32: the pinned numbers must not depend on whether the CPU computes bf16 natively
        **TINY_NETWORK,
        **extra,
    }


def config_files(*names: str) -> list[str]:
    return [str(CONFIGS / name) for name in names]


def run_workflow(configs: str | list[str], run_id: str, overrides: dict) -> ConfigWorkflow:
    """Run bundle configs (one name or a merge list) like ``python -m monai.bundle run`` does; return the workflow."""
    names = [configs] if isinstance(configs, str) else configs
    workflow = ConfigWorkflow(config_file=config_files(*names), run_id=run_id, workflow_type=None, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def scoring_overrides(bundle_root: Path, **extra) -> dict:
    """Inference/evaluation take the architecture and EHR groups from the checkpoint, so only paths change."""
    return {"bundle_root": str(bundle_root), "ieca_mode": "pooled", **extra}
