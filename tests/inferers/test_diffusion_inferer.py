"""Diff3M's training forward and mixed loss on MONAI's stock ``SupervisedTrainer``, with its iteration events."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.engines import IterationEvents
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.inferers import Diff3MDiffusionInferer, Diff3MValidationInferer
from monai_diff3m.networks import Diff3MUNet

from trainer_parts import TINY, tiny_trainer


def test_inferer_noises_x0_and_returns_the_network_prediction_with_its_reconstruction():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    inferer = Diff3MDiffusionInferer(scheduler)
    assert isinstance(inferer, DiffusionInferer)
    torch.manual_seed(0)
    network = Diff3MUNet(ieca_mode="none", use_pcm=True, **TINY)
    image, noise, timesteps = torch.rand(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([10, 700])
    prediction = inferer(image, network, noise, timesteps)
    noisy = scheduler.add_noise(image, noise, timesteps)
    torch.testing.assert_close(prediction, network(noisy, timesteps, with_reconstruction=True), rtol=0, atol=0)
    assert prediction.shape == (2, 2, 16, 16)
    with pytest.raises(NotImplementedError, match="Diff3MAnomalyInferer"):
        inferer.sample(noise, network)

    shown = Diff3MValidationInferer(scheduler)(image, network, noise, timesteps)
    torch.testing.assert_close(shown["prediction"], prediction, rtol=0, atol=0)
    torch.testing.assert_close(shown["noisy"], noisy)
    torch.testing.assert_close(shown["reconstruction"], prediction[:, 1:])
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    x0_estimate = ((noisy - (1 - alpha_bar).sqrt() * prediction[:, :1]) / alpha_bar.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(shown["x0_estimate"], x0_estimate)
    assert shown["masked"][0, 0, 0, 0] == noisy[0, 0, 0, 0] * 0.01  # m₁ = 0 there, softened to t/T = 10/1000


def test_stock_trainer_fires_iteration_events_with_the_prediction_and_the_mixed_loss():
    seen: dict[str, list] = {"forward": [], "loss": []}
    trainer = tiny_trainer([{"image": torch.rand(2, 1, 16, 16)}], max_epochs=2, use_pcm=True)

    @trainer.on(IterationEvents.FORWARD_COMPLETED)
    def _forward(engine):
        seen["forward"].append(engine.state.output["pred"].detach().clone())

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def _loss(engine):
        output = engine.state.output
        prediction, target = output["pred"].detach(), output["label"]
        mixed = 0.5 * F.mse_loss(prediction[:, :1], target[:, :1]) + 0.5 * F.mse_loss(prediction[:, 1:], target[:, 1:])
        seen["loss"].append((output["loss"].item(), mixed.item()))

    trainer.run()
    assert [prediction.shape for prediction in seen["forward"]] == [(2, 2, 16, 16)] * 2  # ε̂ and x̃_t stacked
    assert len(seen["loss"]) == 2
    for loss, mixed in seen["loss"]:
        assert loss == mixed and loss > 0
