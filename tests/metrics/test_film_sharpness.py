import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.layers import GaussianFilter

from monai_diff3m.metrics.anomaly_metrics import below_chance_warnings, evaluate_table
from monai_diff3m.metrics.film_sharpness import laplacian_variance, rank_correlation


def test_blurring_a_film_lowers_its_laplacian_variance():
    film = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    blurred = GaussianFilter(spatial_dims=2, sigma=1.5)(film)
    sharp, soft = laplacian_variance(torch.cat([film, blurred]))
    assert soft < 0.2 * sharp
    assert laplacian_variance(torch.full((2, 1, 8, 8), 0.3)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        laplacian_variance(torch.zeros(8, 8))


def test_rank_correlation():
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == pytest.approx(0.5)
    assert rank_correlation(np.ones(3), np.arange(3.0)) == 0.0


def test_a_score_that_tracks_sharpness_reads_below_chance_and_is_warned_about():
    """The mechanism of a below-chance schedule, in miniature: abnormal films are the softer ones, and a score that
    grows with high-frequency content (what a nearly exact reconstruction leaves) ranks them as the most normal."""
    generator = torch.Generator().manual_seed(1)
    films = torch.rand(40, 1, 32, 32, generator=generator)
    abnormal = torch.arange(40) % 2 == 1
    films[abnormal] = GaussianFilter(spatial_dims=2, sigma=1.0)(films[abnormal])
    table = pd.DataFrame(
        {
            "No Finding": np.where(abnormal.numpy(), np.nan, 1.0),
            "residual": laplacian_variance(films).numpy(),
            "useful": abnormal.float().numpy() + 0.1 * np.arange(40) / 40,
        }
    )
    metrics = evaluate_table(table, ["residual", "useful"], groups=[], num_samples=50)
    warnings = below_chance_warnings(metrics)
    assert metrics["scores"]["residual"]["auroc"] == 0.0
    assert len(warnings) == 1 and warnings[0].startswith("score 'residual' reads AUROC 0.000")
    assert "whole interval is below 0.5" in warnings[0]
