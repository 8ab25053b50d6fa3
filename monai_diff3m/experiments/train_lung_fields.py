"""Self-training of the lung-field network (:mod:`monai_diff3m.networks.lung_fields`), which made its shipped weights.

No lung annotations exist for the datasets this project reads, so labels come from rules where the rules are
unambiguous and from the network itself elsewhere:

1. Real films: :func:`~monai_diff3m.networks.lung_field_rules.separated_lung_fields`, kept where
   :func:`~monai_diff3m.networks.lung_field_rules.plausible_lung_fields` accepts the mask. Phantom films: the exact
   rule :func:`~monai_diff3m.networks.lung_field_rules.lung_field_mask`, so one network serves both.
2. A MONAI ``UNet`` learns from those with random affine, contrast and noise augmentation (the labelled films are
   the easy ones; augmentation makes them look like the rest).
3. The network labels every real film; the plausible masks become the next round's labels, and it is retrained.

The shipped weights were made with (NIH ChestX-ray14 development set, not the 64x64 set the masks are checked on)::

    python -m monai_diff3m.experiments.train_lung_fields --dataset-csv ../shared/data/nih_cxr14_dev/labels.csv
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from monai_diff3m import schema
from monai_diff3m.data.phantoms import render_case
from monai_diff3m.io import atomic_path
from monai_diff3m.networks.lung_field_rules import lung_field_mask, plausible_lung_fields, separated_lung_fields
from monai_diff3m.networks.lung_fields import (
    DEFAULT_WEIGHTS,
    LUNG_FIELD_SIZE,
    largest_region_per_side,
    lung_field_network,
    normalise_for_lung_fields,
)
from monai_diff3m.transforms.image import read_chest_xray

logger = logging.getLogger(__name__)


def load_films(csv_paths: Sequence[str | Path], image_root: str | Path | None = None) -> torch.Tensor:
    """Every film of the CSVs (their ``Path`` column), as (N, 1, 64, 64) in [0, 1] (percentile-scaled)."""
    films = []
    for csv_path in csv_paths:
        root = Path(image_root) if image_root else Path(csv_path).parent
        for relative in pd.read_csv(csv_path, dtype={schema.PATH: str})[schema.PATH]:
            films.append(normalise_for_lung_fields(read_chest_xray(root / relative).as_tensor()[None])[0])
    return torch.stack(films)


def phantom_films(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` normal phantom films with their exact rule masks, kept where the masks are plausible."""
    images, masks = [], []
    for index in range(count):
        pixels = render_case(seed=seed, index=index, image_size=LUNG_FIELD_SIZE, lesion=None).image
        mask = lung_field_mask(pixels)
        if plausible_lung_fields(mask, "strict"):
            images.append(normalise_for_lung_fields(torch.from_numpy(pixels)[None, None])[0])
            masks.append(torch.from_numpy(mask)[None])
    return torch.stack(images), torch.stack(masks).float()


def rule_labels(films: torch.Tensor) -> dict[int, np.ndarray]:
    """Plausible masks of :func:`separated_lung_fields`, by film index."""
    masks = {index: separated_lung_fields(film[0].numpy()) for index, film in enumerate(films)}
    return {index: mask for index, mask in masks.items() if plausible_lung_fields(mask, "strict")}


def network_labels(network: torch.nn.Module, films: torch.Tensor) -> dict[int, np.ndarray]:
    """Plausible post-processed network masks, by film index."""
    network.eval()
    with torch.no_grad():
        predicted = torch.cat([network(batch) > 0 for batch in films.split(64)]).numpy()
    masks = {index: largest_region_per_side(mask[0]) for index, mask in enumerate(predicted)}
    return {index: mask for index, mask in masks.items() if plausible_lung_fields(mask, "strict")}


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation (±9°), scale (±15 %), shift (±10 %), gamma (0.6-1.6) and noise for a whole batch at once.

    The labelled films are the easy ones (well centred, well exposed); these draws make them look like the rest.
    """
    count = images.shape[0]
    draw = lambda low, high: low + (high - low) * torch.rand(count, generator=generator)  # noqa: E731
    angle, scale = draw(-0.15, 0.15), draw(0.85, 1.15)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, draw(-0.2, 0.2)], 1), torch.stack([sin, cos, draw(-0.2, 0.2)], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    moved_masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gamma = draw(0.6, 1.6).view(-1, 1, 1, 1).to(images.device)
    noise = (
        0.03 * torch.randn(moved.shape, generator=generator) * (torch.rand(count, 1, 1, 1, generator=generator) < 0.3)
    )
    noise = noise.to(images.device)
    return (moved.clamp(0.0, 1.0) ** gamma + noise).clamp(0.0, 1.0), moved_masks


def train(
    images: torch.Tensor, masks: torch.Tensor, iterations: int, batch_size: int, seed: int, device: str = "cpu"
) -> torch.nn.Module:
    """Train a fresh network on (images, masks) with augmentation on ``device``; returns it on the CPU, in eval mode.

    Random draws come from one CPU generator, so a seed gives the same draws on every device."""
    set_determinism(seed=seed)
    images, masks = images.to(device), masks.to(device)
    network = lung_field_network().to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_function = DiceCELoss(sigmoid=True)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for iteration in range(iterations):
        picks = torch.randint(0, len(images), (batch_size,), generator=generator).to(device)
        batch, target = augment(images[picks], masks[picks], generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(network(batch), target)
        loss.backward()
        optimizer.step()
        if (iteration + 1) % 200 == 0:
            logger.info("iteration %d/%d: loss %.4f", iteration + 1, iterations, loss.item())
    return network.cpu().eval()


def main(argv: Sequence[str] | None = None) -> torch.nn.Module:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-csv", nargs="+", required=True, help="CSV(s) of real frontal films (column Path)")
    parser.add_argument("--image-root", default=None, help="folder the paths are relative to (default: each CSV's)")
    parser.add_argument("--phantoms", type=int, default=200, help="normal phantom films added with their exact masks")
    parser.add_argument("--rounds", type=int, default=3, help="self-training rounds (1 = rule labels only)")
    parser.add_argument("--iterations", type=int, default=1500, help="optimiser steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=str(DEFAULT_WEIGHTS), help="weights file (float16 state dict)")
    args = parser.parse_args(argv)

    films = load_films(args.dataset_csv, args.image_root)
    phantom_images, phantom_masks = phantom_films(args.phantoms, args.seed)
    labels = rule_labels(films)
    network = None
    for round_index in range(args.rounds):
        logger.info(
            "round %d: %d of %d real films labelled, %d phantoms",
            round_index + 1,
            len(labels),
            len(films),
            len(phantom_images),
        )
        indices = sorted(labels)
        images = torch.cat([films[indices], phantom_images])
        masks = torch.cat(
            [torch.from_numpy(np.stack([labels[index] for index in indices]))[:, None].float(), phantom_masks]
        )
        network = train(images, masks, args.iterations, args.batch_size, args.seed + round_index, args.device)
        labels = network_labels(network, films)
    if network is None:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    logger.info("final network finds plausible lungs in %d of %d real training films", len(labels), len(films))
    state = {key: value.half() for key, value in network.state_dict().items()}
    with atomic_path(args.output) as temporary:
        torch.save(state, temporary)
    logger.info("wrote %s", args.output)
    return network


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
