import pytest
import torch
from ignite.engine import Engine, Events

from monai_diff3m.handlers import WarmupEMAHandler
from monai_diff3m.handlers.ema import warmup_decay


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def _attached(ema: WarmupEMAHandler) -> Engine:
    engine = Engine(lambda engine, batch: None)
    ema.attach(engine)
    return engine


def test_warmup_caps_the_decay_then_reaches_the_reference_decay():
    assert warmup_decay(0.9999, 0) == 0.1  # (1 + 0) / (10 + 0): the first update nearly copies the weights
    assert abs(warmup_decay(0.9999, 290) - 291 / 300) < 1e-12  # about the CPU demo's optimiser steps
    assert warmup_decay(0.9999, 10**6) == 0.9999
    engine = _attached(WarmupEMAHandler(_network(), decay=0.9999, warmup=True))
    engine.run([0], max_epochs=1)
    assert engine.state.ema_momentum == pytest.approx(0.9)
    engine = _attached(WarmupEMAHandler(_network(), decay=0.9999, warmup=False))
    engine.run([0], max_epochs=1)
    assert engine.state.ema_momentum == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="decay must be in"):
        WarmupEMAHandler(_network(), decay=1.0)


def test_every_iteration_moves_the_average_towards_the_weights_and_copies_buffers():
    network = _network()
    ema = WarmupEMAHandler(network, decay=0.5, warmup=False)
    start = ema.ema_model[0].weight.clone()
    with torch.no_grad():
        network[0].weight.add_(1.0)
        network[1].running_mean.fill_(3.0)
    _attached(ema).run([0, 0], max_epochs=1)  # two iterations: ema = start + 1·(1 − 0.5²)
    assert torch.allclose(ema.ema_model[0].weight, start + 0.75)
    assert torch.equal(ema.ema_model[1].running_mean, torch.full((2,), 3.0))
    assert not any(p.requires_grad for p in ema.ema_model.parameters()) and not ema.ema_model.training


def test_ema_model_weights_are_a_drop_in_set_of_network_weights():
    network = _network()
    ema = WarmupEMAHandler(network, decay=0.9)
    restored = _network()
    with torch.no_grad():
        next(restored.parameters()).add_(5.0)
    restored.load_state_dict(ema.ema_model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), network.state_dict().values()))


def test_a_resumed_trainer_continues_the_warm_up_instead_of_restarting_it():
    engine = _attached(WarmupEMAHandler(_network(), decay=0.9999, warmup=True))
    engine.state.iteration = 290  # what ResumeFromCheckpoint restores after 290 steps
    engine.state.epoch = 10
    engine.state.epoch_length = 29
    engine.run([0] * 29, max_epochs=11)  # one more epoch: updates 291 to 319
    assert engine.state.ema_momentum == pytest.approx(1 - 319 / 328)  # a fresh counter would be at 1 - 29 / 38


def test_foreach_update_equals_ignites_per_parameter_loop_bit_for_bit():
    from ignite.handlers import EMAHandler

    from monai_diff3m.networks import Diff3MUNet

    torch.manual_seed(0)
    network = Diff3MUNet(
        ieca_mode="pooled", channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8
    )
    foreach = WarmupEMAHandler(network, decay=0.99, warmup=True)
    loop = EMAHandler(network, momentum=0.01)
    loop_engine = Engine(lambda engine, batch: None)
    loop_engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda engine: setattr(engine.state, "ema_momentum", 1.0 - warmup_decay(0.99, engine.state.iteration - 1)),
    )
    loop.attach(loop_engine, "ema_momentum", warn_if_exists=False, event=Events.ITERATION_COMPLETED)
    foreach_engine = _attached(foreach)
    for step in range(5):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn_like(parameter))
        loop_engine.run([0], max_epochs=step + 1)
        foreach_engine.run([0], max_epochs=step + 1)
    assert foreach_engine.state.iteration == loop_engine.state.iteration == 5
    for (name, averaged), expected in zip(foreach.ema_model.state_dict().items(), loop.ema_model.state_dict().values()):
        assert torch.equal(averaged, expected), name
    assert not torch.equal(foreach.ema_model.unet.conv_in.conv.weight, network.unet.conv_in.conv.weight)
