from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from monai_diff3m.data.phantoms import render_case
from monai_diff3m.networks.lung_field_rules import lung_field_mask, plausible_lung_fields
from monai_diff3m.networks.lung_fields import LungFieldSegmenter, largest_region_per_side, normalise_for_lung_fields
from monai_diff3m.transforms.image import read_chest_xray

REAL_FILMS = Path(__file__).resolve().parents[1] / "data" / "nih64"


def _real_films() -> torch.Tensor:
    paths = pd.read_csv(REAL_FILMS / "labels.csv")["Path"]
    return torch.stack([read_chest_xray(REAL_FILMS / path).as_tensor() for path in paths])


def test_shipped_network_finds_both_lungs_on_real_films_where_the_threshold_rule_does_not():
    films = _real_films()
    masks = LungFieldSegmenter()(films * 2 - 1)[:, 0].numpy()
    found = [plausible_lung_fields(mask) for mask in masks]
    rule = [plausible_lung_fields(lung_field_mask(film[0].numpy())) for film in films]
    assert sum(found) >= 15, found
    assert sum(rule) <= 8, rule
    # a lung is dark: inside the mask the film is darker than in the rest of the thorax
    for film, mask in zip(films[:, 0].numpy(), masks):
        assert film[mask].mean() < film[~mask].mean()


def test_masks_come_back_at_the_input_size_and_do_not_depend_on_the_intensity_window():
    film = _real_films()[:2]
    small, large = (
        LungFieldSegmenter()(torch.nn.functional.interpolate(film, size=size, mode="area")) for size in (32, 128)
    )
    assert small.shape == (2, 1, 32, 32) and large.shape == (2, 1, 128, 128) and large.dtype == torch.bool
    segmenter = LungFieldSegmenter()
    assert torch.equal(segmenter(film), segmenter(film * 0.06 + 0.01))


def test_phantom_lungs_agree_with_the_exact_rule():
    pixels = render_case(seed=5, index=11, image_size=64).image
    predicted = LungFieldSegmenter()(torch.from_numpy(pixels)[None, None])[0, 0].numpy()
    exact = lung_field_mask(pixels)
    assert (predicted & exact).sum() / (predicted | exact).sum() > 0.8


def test_post_processing_keeps_one_region_per_side_and_bad_shapes_are_named():
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 2:6], mask[5:7, 6:7], mask[4:12, 10:14], mask[1:2, 13:14] = True, True, True, True
    mask[8, 4] = False
    kept = largest_region_per_side(mask)
    assert kept[8, 4] and not kept[1, 13] and kept[4:12, 10:14].all()
    assert normalise_for_lung_fields(torch.rand(3, 1, 20, 30)).shape == (3, 1, 64, 64)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        LungFieldSegmenter()(torch.rand(1, 64, 64))
    with pytest.raises(FileNotFoundError, match="train_lung_fields"):
        LungFieldSegmenter("missing.pt")
