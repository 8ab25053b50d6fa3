import json

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, ThreadDataLoader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tiny_bundle import CONFIGS, tiny_overrides


def test_training_lowers_the_validation_loss(trained):
    assert trained.iterations == 24 * (96 // 8)  # 288 optimiser steps on the tiny phantoms
    assert len(trained.val_losses) == 6
    assert min(trained.val_losses[-2:]) < 0.7 * trained.val_losses[0], trained.val_losses


def test_training_leaves_checkpoints_statistics_and_tensorboard_logs(trained_bundle):
    models = trained_bundle / "models"
    last = torch.load(models / "diff3m_pooled_last.pt", weights_only=True)
    best = torch.load(models / "diff3m_pooled_best.pt", weights_only=True)
    assert last["epoch"] == 24 and {"network", "optimizer", "metadata"} <= set(last)
    assert best["metadata"]["network_args"]["ieca_mode"] == "pooled" and best["metadata"]["best_metric"] > 0
    assert best["metadata"]["ehr_groups"] == ["demographics", "measurements"]
    statistics = json.loads((models / "ehr_statistics_pooled.json").read_text())
    assert 20 < statistics["mean"]["BMI"] < 35
    assert not list(models.glob("*.tmp*"))

    events = EventAccumulator(str(trained_bundle / "runs" / "diff3m_pooled" / "train"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "train/learning_rate", "train/images_per_second"} <= scalars
    assert [event.value for event in events.Scalars("train/learning_rate")] == pytest.approx([0.002] * 24)
    assert all(event.value > 0 for event in events.Scalars("train/images_per_second"))
    assert {"val/image", "val/masked", "val/x0_estimate"} <= set(events.Tags()["images"])
    assert best["metadata"]["training_data"] == "synthetic phantoms"


@pytest.mark.slow
def test_stage_two_starts_from_stage_one_with_frozen_encoder(trained_bundle):
    stage1 = torch.load(trained_bundle / "models" / "diff3m_pooled_best.pt", weights_only=True)["network"]
    overrides = tiny_overrides(trained_bundle, max_epochs=1, val_interval=1)
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "train_pcm.json")],
        run_id="training",
        workflow_type=None,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    stage2 = torch.load(trained_bundle / "models" / "diff3m_pooled_pcm_last.pt", weights_only=True)["network"]
    frozen = [
        key
        for key in stage1
        if key.startswith(("unet.conv_in", "unet.down_blocks", "unet.time_embed", "image_encoder"))
    ]
    assert frozen and all(torch.equal(stage1[key], stage2[key]) for key in frozen)
    trained = [key for key in stage1 if key.startswith("unet.up_blocks") and key.endswith("weight")]
    assert any(not torch.equal(stage1[key], stage2[key]) for key in trained)
    assert any(key.startswith("pcm_encoders.1.down_blocks") for key in stage2)


def test_thread_loader_switch_picks_the_training_and_validation_loaders(tmp_path):
    (tmp_path / "models").mkdir()  # made by the training run's initialize step, which this test does not run
    loaders = {}
    for switch in (True, False):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update({**tiny_overrides(tmp_path), "thread_loader": switch})
        loaders[switch] = [type(parser.get_parsed_content(f"{part}#dataloader")) for part in ("train", "validate")]
    assert loaders[True] == [ThreadDataLoader, ThreadDataLoader]
    assert loaders[False] == [DataLoader, DataLoader]  # the CPU default: a collation thread would compete with compute


@pytest.mark.slow
def test_compile_switch_compiles_the_network_the_trainer_runs_and_checkpoints_keep_the_plain_one(tmp_path):
    (tmp_path / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({**tiny_overrides(tmp_path), "compile": True})
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.compile and isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.network._orig_mod is parser.get_parsed_content("network")
    last_writer = parser.get_parsed_content("train#handlers#3")
    assert last_writer.save_dict["network"] is parser.get_parsed_content("network")
