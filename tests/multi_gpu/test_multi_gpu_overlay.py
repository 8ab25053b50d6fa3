"""The multi-GPU overlay, run as users run it (``torchrun ... -m monai.bundle run training``) with 2 CPU processes.

gloo stands in for NCCL: the overlay only swaps what DDP needs (device per rank, DistributedDataParallel,
DistributedSampler, rank-0-only logging and checkpoints), and that is backend independent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from monai_diff3m.data.phantoms import ensure_phantom_dataset

from bundle.tiny_bundle import TINY_NETWORK, TINY_PHANTOMS
from multi_gpu.torchrun_bundle import run_torchrun

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

TRAIN_PER_RANK = TINY_PHANTOMS["num_train"] // 2  # DistributedSampler splits the 96 training images between 2 ranks
BATCH_SIZE = 16


def test_two_cpu_processes_train_one_model_and_write_one_checkpoint_set(tmp_path: Path) -> None:
    overrides = {
        "bundle_root": str(tmp_path),
        "ieca_mode": "pooled",
        "phantoms": TINY_PHANTOMS,
        "batch_size": BATCH_SIZE,
        "max_epochs": 2,
        "val_interval": 2,
        "use_ema": True,
        **TINY_NETWORK,
    }
    ensure_phantom_dataset(tmp_path / "data" / "phantoms", **TINY_PHANTOMS)  # once, before the two ranks start
    log = run_torchrun(tmp_path, ["train.json", "multi_gpu_train.json"], "training", overrides, timeout=120)

    # both processes trained (ignite logs on every rank), each on its half of the data: 48 images -> 3 iterations
    # of 16 per epoch; the validation loss is averaged over both ranks' shards, so both report the same best value
    assert len(re.findall(r"SupervisedTrainer - INFO - Engine run finished", log)) == 2, log[-4000:]
    best_values = re.findall(r"Got new best metric of val_loss: ([0-9.]+)", log)
    assert len(best_values) == 2 and best_values[0] == best_values[1], log[-4000:]
    iterations_per_epoch = TRAIN_PER_RANK // BATCH_SIZE
    assert f"Epoch: 2/2, Iter: {iterations_per_epoch}/{iterations_per_epoch} " in log, log[-4000:]
    models = tmp_path / "models"
    last = torch.load(models / "diff3m_pooled_last.pt", weights_only=True)
    # rank 0 alone writes checkpoints and TensorBoard logs; the weights have no DDP "module." prefix
    assert sorted(path.name for path in models.glob("*.pt")) == ["diff3m_pooled_best.pt", "diff3m_pooled_last.pt"]
    assert not list(models.glob(".*tmp*"))
    assert len(list((tmp_path / "runs").rglob("events.out.tfevents.*"))) == 1
    assert not any(key.startswith("module.") for key in last["network"]) and "ema_network" in last
    assert set(last["ema_network"]) == set(last["network"])


def test_writing_handlers_are_turned_off_on_other_ranks_by_one_named_flag_not_by_list_position() -> None:
    """``train.json``'s handlers that write (logs, TensorBoard, checkpoints, image grids) carry
    ``_disabled_: @is_not_rank0``, false in one process; the overlay only redefines that flag. Adding or moving a
    handler therefore cannot shift which ones are off, as ``train#handlers#<position>#_disabled_`` keys would."""
    from monai.bundle import ConfigParser

    from monai_diff3m.packaged_bundle import config_files

    on_every_rank = {"ValidationHandler", "monai_diff3m.handlers.checkpoint.ResumeFromCheckpoint"}
    single, multi = ConfigParser(), ConfigParser()
    single.read_config(config_files("train.json"))
    multi.read_config(config_files("train.json", "multi_gpu_train.json"))
    assert single.get("is_not_rank0") is False and multi.get("is_not_rank0").startswith("$")
    for engine in ("train", "validate"):
        for handler in single.get(f"{engine}#handlers"):
            expected = None if handler["_target_"] in on_every_rank else "@is_not_rank0"
            if expected or "_disabled_" not in handler:
                assert handler.get("_disabled_") == expected, handler["_target_"]
    assert not [key for key in multi.get() if "handlers#" in key]
