"""A tiny Diff3M training set-up on MONAI's stock ``SupervisedTrainer``, shared by the engine and handler tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.engines import SupervisedTrainer
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.engines import Diff3MLoss, Diff3MPrepareBatch
from monai_diff3m.inferers import Diff3MDiffusionInferer
from monai_diff3m.networks import Diff3MUNet

TINY = {"channels": (8, 16), "attention_levels": (False, False), "num_head_channels": 8, "norm_num_groups": 8}


def tiny_trainer(
    batches: Sequence[dict], max_epochs: int = 1, handlers: Sequence = (), use_pcm: bool = False
) -> SupervisedTrainer:
    """A seeded image-only network trained on ``batches`` (one epoch is one pass over them)."""
    torch.manual_seed(0)
    network = Diff3MUNet(ieca_mode="none", use_pcm=use_pcm, **TINY)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=list(batches),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
        loss_function=Diff3MLoss(),
        prepare_batch=Diff3MPrepareBatch(scheduler),
        inferer=Diff3MDiffusionInferer(scheduler),
        train_handlers=list(handlers),
        decollate=False,
    )
