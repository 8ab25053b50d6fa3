import pytest
import torch

from monai_diff3m.engines import Diff3MLoss


def test_mixed_loss_on_a_hand_computed_case():
    target = torch.zeros(1, 2, 2, 2)  # ε and x_t stacked, as Diff3MPrepareBatch prepares them
    prediction = torch.cat([torch.full((1, 1, 2, 2), 2.0), torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])], dim=1)
    # MSE(ε̂, ε) = 4, MSE(x̃_t, x_t) = 0.5 -> 0.25·4 + 0.75·0.5
    assert Diff3MLoss(noise_weight=0.25)(prediction, target).item() == pytest.approx(1.375)
    assert Diff3MLoss()(prediction, target).item() == pytest.approx(2.25)


def test_without_pcm_the_loss_is_the_noise_mse():
    target = torch.cat([torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 9.0)], dim=1)  # x_t is not compared
    assert Diff3MLoss(noise_weight=0.5)(torch.ones(1, 1, 2, 2), target).item() == pytest.approx(1.0)


def test_a_prediction_of_another_width_is_refused():
    with pytest.raises(ValueError, match="1 or 2 channels, got 3"):
        Diff3MLoss()(torch.ones(1, 3, 2, 2), torch.zeros(1, 2, 2, 2))


def test_noise_weight_must_be_a_fraction():
    with pytest.raises(ValueError, match="noise_weight"):
        Diff3MLoss(noise_weight=1.5)
