import pytest
import torch

from monai_diff3m.engines import Diff3MLoss
from monai_diff3m.networks import Diff3MOutput


def test_mixed_loss_on_a_hand_computed_case():
    noise = torch.zeros(1, 1, 2, 2)
    noisy = torch.zeros(1, 1, 2, 2)
    output = Diff3MOutput(
        noise=torch.full((1, 1, 2, 2), 2.0),
        reconstruction=torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]),
        ehr_attention=None,
    )
    # MSE(ε̂, ε) = 4, MSE(x̃_t, x_t) = 0.5 -> 0.25·4 + 0.75·0.5
    assert Diff3MLoss(noise_weight=0.25)(output, noise, noisy).item() == pytest.approx(1.375)
    assert Diff3MLoss()(output, noise, noisy).item() == pytest.approx(2.25)


def test_without_pcm_the_loss_is_the_noise_mse():
    output = Diff3MOutput(noise=torch.ones(1, 1, 2, 2), reconstruction=None, ehr_attention=None)
    assert Diff3MLoss(noise_weight=0.5)(
        output, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    ).item() == pytest.approx(1.0)


def test_noise_weight_must_be_a_fraction():
    with pytest.raises(ValueError, match="noise_weight"):
        Diff3MLoss(noise_weight=1.5)
