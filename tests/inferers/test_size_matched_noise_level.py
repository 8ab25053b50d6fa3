"""The scoring noise level follows the image size: the same coarse signal-to-noise ratio as the level at 64x64."""

import logging

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.data.phantoms import render_case
from monai_diff3m.inferers import Diff3MAnomalyInferer, size_matched_noise_level
from monai_diff3m.packaged_bundle import config_files


def _scheduler() -> DDPMScheduler:
    """The bundle's training schedule (train.json ``scheduler_args``)."""
    return DDPMScheduler(1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)


def _snr(scheduler: DDPMScheduler, timestep: int) -> float:
    alpha_bar = float(scheduler.alphas_cumprod[timestep])
    return alpha_bar / (1 - alpha_bar)


def test_the_level_chosen_at_64x64_is_kept_there():
    scheduler = _scheduler()
    assert [size_matched_noise_level(level, 64, scheduler) for level in range(1000)] == list(range(1000))


def test_larger_films_are_noised_further_to_the_level_whose_snr_falls_with_the_pixel_count():
    scheduler = _scheduler()
    levels = {size: size_matched_noise_level(200, size, scheduler) for size in (32, 64, 128, 256, 512)}
    assert levels == {32: 105, 64: 200, 128: 330, 256: 467, 512: 589}
    for size, level in levels.items():
        target = _snr(scheduler, 200) * (64 / size) ** 2
        assert _snr(scheduler, level) >= target > _snr(scheduler, level + 1)  # the last timestep not noisier


def test_the_matched_level_leaves_a_128_film_pooled_to_64_as_noisy_as_the_64_film_at_the_reference_level():
    """What the rule claims: read at the scale of the 64x64 film (2x2 means), both are equally far from clean."""
    scheduler = _scheduler()
    generator = torch.Generator().manual_seed(0)

    def coarse_error(size: int, level: int) -> float:
        clean = torch.as_tensor(render_case(seed=0, index=0, image_size=size).image)[None, None] * 2 - 1
        noisy = scheduler.add_noise(clean, torch.randn(clean.shape, generator=generator), torch.tensor([level]))
        alpha_bar = scheduler.alphas_cumprod[level]
        pool = size // 64
        return float((F.avg_pool2d(noisy / alpha_bar.sqrt() - clean, pool)).std())

    at_64 = coarse_error(64, 200)
    assert coarse_error(128, size_matched_noise_level(200, 128, scheduler)) == pytest.approx(at_64, rel=0.05)
    assert coarse_error(128, 200) < 0.6 * at_64  # the 64x64 level barely disturbs a 128 film


def test_bad_levels_and_sizes_are_refused():
    with pytest.raises(ValueError, match="noise_level"):
        size_matched_noise_level(1000, 128, _scheduler())
    with pytest.raises(ValueError, match="image_size"):
        size_matched_noise_level(200, 0, _scheduler())


@pytest.mark.parametrize(
    "overlays, overrides, expected",
    [
        ((), {"image_size": 32}, 199),
        ((), {"image_size": 64}, 330),
        ((), {"image_size": 128}, 466),
        ((), {"image_size": 256}, 588),
        (("phantom_demo.json",), {"image_size": 64}, 50),
        (("phantom_demo.json",), {"image_size": 128}, 102),
        ((), {"image_size": 128, "noise_level": 400}, 400),  # a level given on the command line is taken as it is
        ((), {"image_size": 128, "noise_level_at_64": 100}, 190),
    ],
)
def test_the_bundle_scores_at_the_level_matched_to_the_checkpoints_image_size(overlays, overrides, expected):
    parser = ConfigParser()
    parser.read_config(config_files("inference.json", *overlays))
    parser.update({"scheduler": _scheduler(), **overrides})
    assert parser.get_parsed_content("noise_level") == expected


def test_the_inferer_says_which_level_it_scores_at(caplog):
    with caplog.at_level(logging.INFO, logger="monai_diff3m.inferers.anomaly"):
        Diff3MAnomalyInferer(_scheduler(), noise_level=330, num_steps=10)
    assert "scoring schedule: ddim_inversion L=330 steps=10, 20 network evaluations per film" in caplog.text
