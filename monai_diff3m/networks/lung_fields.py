"""A small lung-field segmentation network for the lung-restricted anomaly score, shipped with its weights.

Real films defeat threshold rules (the lungs join the air above the shoulders), and no lung annotations come with
CheXpert, MIMIC or NIH. The network is therefore trained by self-training (``python -m
monai_diff3m.experiments.train_lung_fields``): a strict rule labels the films where it is unambiguous, a MONAI
``UNet`` learns from those with strong augmentation, and it labels the rest. It works at 64x64 on the film scaled
to its 1st-99th percentiles, so any image size and intensity window is resized and rescaled first; the mask comes
back at the input's size. Post-processing keeps the largest region on each side and fills holes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from scipy import ndimage

#: Side of the square the network reads; other sizes are resized to it and the mask back to theirs.
LUNG_FIELD_SIZE = 64
#: Weights trained by ``python -m monai_diff3m.experiments.train_lung_fields`` (see that module for the data and the
#: command).
DEFAULT_WEIGHTS = Path(__file__).with_name("lung_fields_64.pt")


def lung_field_network() -> UNet:
    """The architecture of the shipped weights: a 4-level 2-D UNet, 0.2M parameters."""
    return UNet(
        spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1
    )


def normalise_for_lung_fields(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) films in any range -> (N, 1, 64, 64), each scaled to its 1st-99th percentiles in [0, 1]."""
    resized = F.interpolate(images.float(), size=(LUNG_FIELD_SIZE, LUNG_FIELD_SIZE), mode="area")
    flat = resized.flatten(1)
    low = torch.quantile(flat, 0.01, dim=1).view(-1, 1, 1, 1)
    high = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1, 1)
    return ((resized - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)


def largest_region_per_side(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected region whose centre is in each half of the film, with holes filled."""
    labels, count = ndimage.label(mask)
    kept = np.zeros_like(mask, dtype=bool)
    if count == 0:
        return kept
    indices = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=indices)
    columns = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, index=indices))[:, 1]
    for left_side in (True, False):
        on_side = (columns < mask.shape[1] / 2) == left_side
        if on_side.any():
            kept |= labels == indices[on_side][np.argmax(sizes[on_side])]
    return ndimage.binary_fill_holes(kept)


class LungFieldSegmenter:
    """Boolean lung masks (N, 1, H, W) of a batch of frontal films (N, 1, H, W), any size and intensity range.

    Args:
        weights: the trained state dict (default: the shipped ``lung_fields_64.pt``).
        device: where the network runs; default the device of each batch.
    """

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS) -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"lung-field weights {weights} not found; train them with "
                "python -m monai_diff3m.experiments.train_lung_fields"
            )
        self.network = lung_field_network()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.network.load_state_dict({key: value.float() for key, value in state.items()})
        self.network.eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected films of shape (N, 1, H, W), got {tuple(images.shape)}")
        network = self.network.to(images.device)
        logits = network(normalise_for_lung_fields(images))
        size = tuple(images.shape[-2:])
        if size != (LUNG_FIELD_SIZE, LUNG_FIELD_SIZE):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        masks = [largest_region_per_side(mask[0]) for mask in (logits > 0).cpu().numpy()]
        return torch.from_numpy(np.stack(masks))[:, None].to(images.device)
