"""``Diff3MPrepareBatch``: MONAI's diffusion batch preparation with Diff3M's EHR, x₀ and mixed-loss target."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.data import MetaTensor
from monai.engines.utils import DiffusionPrepareBatch
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.engines import Diff3MPrepareBatch


def _batch() -> dict:
    torch.manual_seed(1)
    return {"image": MetaTensor(torch.rand(3, 1, 8, 8)), "ehr": torch.rand(3, 4), "ehr_missing": torch.zeros(3, 4)}


def test_draws_t_then_noise_from_the_global_rng_and_targets_noise_and_x_t():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    prepare = Diff3MPrepareBatch(scheduler)
    assert isinstance(prepare, DiffusionPrepareBatch)
    batch = _batch()
    torch.manual_seed(0)
    image, target, args, inputs = prepare(batch, torch.device("cpu"))
    torch.manual_seed(0)  # the order of the draws every seeded run was made with: timesteps first, then noise
    timesteps = torch.randint(0, 1000, (3,))
    noise = torch.randn(3, 1, 8, 8)
    assert type(image) is torch.Tensor and torch.equal(image, batch["image"].as_tensor()) and args == ()
    assert set(inputs) == {"noise", "timesteps", "ehr", "ehr_missing", "x0"}
    assert torch.equal(inputs["timesteps"], timesteps) and torch.equal(inputs["noise"], noise)
    assert inputs["x0"] is image and torch.equal(inputs["ehr"], batch["ehr"])
    torch.testing.assert_close(target, torch.cat([noise, scheduler.add_noise(image, noise, timesteps)], dim=1))


def test_seeded_draws_repeat_for_the_same_batch_index_of_every_epoch():
    prepare = Diff3MPrepareBatch(DDPMScheduler(num_train_timesteps=1000), seed=3)
    with pytest.raises(RuntimeError, match="attach"):
        prepare(_batch())
    engine = SimpleNamespace(state=SimpleNamespace(iteration=1, epoch_length=2))
    prepare.attach(engine)
    first = prepare(_batch())[3]
    engine.state.iteration = 2
    second = prepare(_batch())[3]
    engine.state.iteration = 3  # the first batch of the next epoch
    again = prepare(_batch())[3]
    assert torch.equal(first["noise"], again["noise"]) and torch.equal(first["timesteps"], again["timesteps"])
    assert not torch.equal(first["noise"], second["noise"])
    generator = torch.Generator().manual_seed(3 * 100_003)
    assert torch.equal(first["timesteps"], torch.randint(0, 1000, (3,), generator=generator))


def test_a_batch_without_ehr_gives_none_and_without_image_a_clear_error():
    prepare = Diff3MPrepareBatch(DDPMScheduler(num_train_timesteps=1000))
    inputs = prepare({"image": torch.zeros(2, 1, 4, 4)})[3]
    assert inputs["ehr"] is None and inputs["ehr_missing"] is None
    with pytest.raises(KeyError, match="no 'image'"):
        prepare({"ehr": torch.zeros(2, 4)})
