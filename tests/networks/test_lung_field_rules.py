import numpy as np
import pytest

from monai_diff3m.data.phantoms import render_case
from monai_diff3m.networks.lung_field_rules import lung_field_mask, otsu_threshold


def test_otsu_splits_two_clusters():
    values = np.concatenate([np.full(100, 0.2), np.full(50, 0.8)])
    assert 0.2 <= otsu_threshold(values) < 0.8


def test_lung_fields_of_a_phantom_are_two_dark_regions_inside_the_body():
    image = render_case(seed=0, index=3, image_size=64).image
    mask = lung_field_mask(image)
    assert 0.1 < mask.mean() < 0.5
    assert image[mask].mean() < image[~mask & (image > 0.05)].mean()
    assert not mask[0].any() and not mask[:, 0].any()
    assert mask[:, :32].any() and mask[:, 32:].any()


def test_no_lungs_gives_an_empty_mask_and_bad_shapes_an_error():
    assert not lung_field_mask(np.full((16, 16), 0.5)).any()
    with pytest.raises(ValueError, match="2-D"):
        lung_field_mask(np.zeros((1, 16, 16)))


def test_separated_rule_finds_lungs_of_a_phantom_and_the_strict_check_is_stricter():
    from monai_diff3m.networks.lung_field_rules import plausible_lung_fields, separated_lung_fields

    image = render_case(seed=0, index=3, image_size=64).image
    mask = separated_lung_fields(image)
    exact = lung_field_mask(image)
    assert (mask & exact).sum() / (mask | exact).sum() > 0.7
    small = np.zeros((64, 64), dtype=bool)
    small[20:36, 10:20], small[20:36, 40:50] = True, True  # short lungs: 25 % of the film tall
    assert plausible_lung_fields(small, "loose") and not plausible_lung_fields(small, "strict")
    assert not plausible_lung_fields(small[:, :32].repeat(2, axis=1) * False)
