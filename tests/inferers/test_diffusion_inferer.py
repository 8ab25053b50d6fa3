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


def _convolution_dtypes(network: torch.nn.Module) -> set[torch.dtype]:
    """Records the output dtype of every convolution the network runs (filled in by forward hooks)."""
    seen: set[torch.dtype] = set()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _module, _inputs, output: seen.add(output.dtype))
    return seen


def test_bf16_autocast_takes_effect_on_cpu_and_hands_back_float32():
    """MONAI's engines autocast for "cuda" only; the inferer's own autocast runs the convolutions in bf16 on a
    CPU too, and the loss still sees float32 close to the float32 prediction."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    torch.manual_seed(0)
    network = Diff3MUNet(ieca_mode="none", use_pcm=True, **TINY)
    for parameter in network.parameters():  # MONAI zero-initialises the output convolutions
        if not parameter.detach().any():
            torch.nn.init.normal_(parameter, std=0.05)
    image, noise, timesteps = torch.rand(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([10, 700])
    convolutions = _convolution_dtypes(network)
    full = Diff3MDiffusionInferer(scheduler)(image, network, noise, timesteps)
    assert convolutions == {torch.float32}
    convolutions.clear()
    half = Diff3MDiffusionInferer(scheduler, autocast_dtype=torch.bfloat16)(image, network, noise, timesteps)
    assert convolutions == {torch.bfloat16}
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)
    torch.testing.assert_close(half, full, rtol=0, atol=0.1)
    shown = Diff3MValidationInferer(scheduler, autocast_dtype=torch.bfloat16)(image, network, noise, timesteps)
    assert shown["prediction"].dtype == shown["x0_estimate"].dtype == torch.float32


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_the_training_forward_runs_on_the_meta_device_where_flops_are_counted(autocast_dtype):
    """The benchmarks count FLOPs and saved bytes on the meta device, which has no autocast."""
    network = Diff3MUNet(ieca_mode="none", use_pcm=True, **TINY).to("meta")
    inferer = Diff3MDiffusionInferer(DDPMScheduler(num_train_timesteps=1000), autocast_dtype=autocast_dtype)
    image = torch.empty(2, 1, 16, 16, device="meta")
    prediction = inferer(image, network, torch.empty_like(image), torch.zeros(2, dtype=torch.long, device="meta"))
    assert prediction.shape == (2, 2, 16, 16) and prediction.device.type == "meta"
