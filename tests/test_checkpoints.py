import logging
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from monai_diff3m.checkpoints import (
    LEGACY_REFERENCE_SCHEDULE,
    checkpoint_metadata,
    load_network_weights,
    network_from_checkpoint,
    noise_scheduler,
    record_reference_scores,
    reference_scores,
    training_data_kind,
    training_data_warnings,
)
from monai_diff3m.engines import start_stage2
from monai_diff3m.handlers import CheckpointWriter
from monai_diff3m.networks import Diff3MUNet

ARGS = dict(
    channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, ehr_group_sizes=(5,)
)


def _save(tmp_path, network, **metadata):
    engine = SimpleNamespace(state=SimpleNamespace(epoch=3))
    CheckpointWriter(tmp_path, {"network": network}, "model.pt", metadata=metadata)(engine)
    return tmp_path / "model.pt"


def test_network_is_rebuilt_from_the_checkpoint_alone(tmp_path):
    args = {**ARGS, "ieca_mode": "spatial"}
    trained = Diff3MUNet(**args)
    path = _save(tmp_path, trained, network_args=args)
    rebuilt = network_from_checkpoint(path)
    assert rebuilt.ieca_mode == "spatial"
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_mismatched_checkpoints_name_the_setting(tmp_path):
    path = _save(tmp_path, Diff3MUNet(**ARGS, ieca_mode="pooled"))
    with pytest.raises(ValueError, match="another ieca_mode than this network's 'none'"):
        load_network_weights(Diff3MUNet(**ARGS, ieca_mode="none"), path)
    with pytest.raises(ValueError, match="no PCM branches"):
        load_network_weights(Diff3MUNet(**ARGS, ieca_mode="pooled", use_pcm=True), path)
    with pytest.raises(ValueError, match="no 'network_args' metadata"):
        network_from_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="train first"):
        load_network_weights(Diff3MUNet(**ARGS), tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        load_network_weights(Diff3MUNet(**ARGS), tmp_path / "junk.pt")


def test_empty_checkpoint_says_empty_not_mmap(tmp_path):
    """A 0-byte checkpoint (interrupted copy) was reported as an mmap/save-format problem."""
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is empty \(0 bytes\): an interrupted copy"):
        checkpoint_metadata(tmp_path / "empty.pt")


def test_stage2_accepts_a_stage1_checkpoint(tmp_path):
    path = _save(tmp_path, Diff3MUNet(**ARGS, ieca_mode="pooled"))
    network = start_stage2(Diff3MUNet(**ARGS, ieca_mode="pooled", use_pcm=True), path)
    assert not any(p.requires_grad for p in network.unet.down_blocks.parameters())


def test_best_checkpoint_is_written_only_when_the_metric_improved(tmp_path):
    writer = CheckpointWriter(tmp_path, {"network": torch.nn.Linear(1, 1)}, "best.pt", only_on_best=True)
    writer(SimpleNamespace(state=SimpleNamespace(epoch=2, best_metric_epoch=1, best_metric=0.5)))
    assert not (tmp_path / "best.pt").exists()
    writer(SimpleNamespace(state=SimpleNamespace(epoch=2, best_metric_epoch=2, best_metric=0.4)))
    assert torch.load(tmp_path / "best.pt", weights_only=True)["metadata"]["best_metric"] == 0.4


def test_validation_normals_are_recorded_as_the_reference_of_the_score(tmp_path):
    args = {**ARGS, "ieca_mode": "spatial"}
    path = _save(tmp_path, Diff3MUNet(**args), network_args=args, image_size=32)
    pd.DataFrame({"No Finding": [1.0, 0.0, 1.0, None], "lowpass_mse": [0.3, 0.9, 0.1, 0.8]}).to_csv(
        tmp_path / "scores.csv", index=False
    )
    assert record_reference_scores(path, tmp_path / "scores.csv", "ddim_inversion L=330 steps=10") == 2
    metadata = checkpoint_metadata(path)
    assert metadata["reference_scores"] == [0.1, 0.3] and metadata["reference_score"] == "lowpass_mse"
    assert metadata["reference_schedule"] == "ddim_inversion L=330 steps=10"
    assert metadata["image_size"] == 32 and network_from_checkpoint(path).ieca_mode == "spatial"
    assert reference_scores(metadata, "lowpass_mse", "ddim_inversion L=330 steps=10") == [0.1, 0.3]
    assert reference_scores(metadata, "p99_smoothed", "ddim_inversion L=330 steps=10") is None


def test_reference_normals_scored_with_another_schedule_give_no_percentile(caplog):
    """A score grows with the noise level: normals scored at L=200 are no reference for a film scored at L=330."""
    metadata = {"reference_scores": [0.1, 0.3], "reference_score": "lowpass_mse"}  # recorded before 0.8.0
    assert reference_scores(metadata, "lowpass_mse", LEGACY_REFERENCE_SCHEDULE) == [0.1, 0.3]
    with caplog.at_level(logging.WARNING, logger="monai_diff3m.checkpoints"):
        assert reference_scores(metadata, "lowpass_mse", "ddim_inversion L=330 steps=10") is None
    assert "scored with ddim_inversion L=200 steps=10, these films with ddim_inversion L=330 steps=10" in caplog.text
    assert reference_scores({}, "lowpass_mse", LEGACY_REFERENCE_SCHEDULE) is None


def test_training_data_kind_and_the_phantom_warning(tmp_path):
    (tmp_path / "phantoms").mkdir()
    (tmp_path / "phantoms" / "phantoms.json").write_text("{}")
    assert training_data_kind(tmp_path / "phantoms" / "train.csv") == "synthetic phantoms"
    assert training_data_kind(tmp_path / "nih" / "train.csv") == "films"
    metadata = {"training_data": "synthetic phantoms"}
    assert training_data_warnings(metadata, tmp_path / "phantoms" / "images" / "test") == []
    assert "trained on synthetic phantoms" in training_data_warnings(metadata, tmp_path / "films")[0]
    assert training_data_warnings({"training_data": "films"}, tmp_path / "films") == []


def test_scoring_reuses_the_noise_schedule_the_checkpoint_records():
    """A schedule changed for training (here a larger beta_end over 500 steps) is the one scoring noises with; a
    checkpoint from before schedules were recorded gets the linear schedule all of those were trained with."""
    recorded = {"num_train_timesteps": 500, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.03}
    scheduler = noise_scheduler({"network_args": {"num_train_timesteps": 500}, "scheduler_args": recorded})
    assert scheduler.num_train_timesteps == 500
    torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([1e-4, 0.03]))
    unrecorded = noise_scheduler({"network_args": {"num_train_timesteps": 1000}})
    assert unrecorded.num_train_timesteps == 1000
    torch.testing.assert_close(unrecorded.betas[[0, -1]], torch.tensor([1e-4, 0.02]))
