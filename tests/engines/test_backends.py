"""Seeding and cuDNN switches: the autotuner unless ``deterministic`` is asked for, in code and in the bundle."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_diff3m.engines import seed_run
from monai_diff3m.inferers import bf16_is_fast

from bundle.tiny_bundle import CONFIGS, tiny_overrides


@pytest.fixture(autouse=True)
def _restore_flags():
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    deterministic_algorithms = torch.are_deterministic_algorithms_enabled()
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    torch.use_deterministic_algorithms(deterministic_algorithms)


def test_seed_run_seeds_and_turns_the_autotuner_on_unless_deterministic():
    seed_run(3)
    first = torch.rand(4)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    assert not torch.are_deterministic_algorithms_enabled()
    seed_run(3, deterministic=True)
    assert torch.equal(torch.rand(4), first)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
    assert torch.are_deterministic_algorithms_enabled()
    seed_run(3, cudnn_benchmark=False)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, False)
    with pytest.raises(ValueError, match="rules out"):
        seed_run(3, deterministic=True, cudnn_benchmark=True)


@pytest.mark.parametrize("deterministic", [False, True])
def test_training_bundle_sets_the_switches_from_its_config_keys(tmp_path, deterministic):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        run_id="training",
        workflow_type=None,
        **tiny_overrides(tmp_path, deterministic=deterministic),
    )
    workflow.initialize()
    assert torch.backends.cudnn.deterministic is deterministic
    assert torch.backends.cudnn.benchmark is not deterministic
    parser = workflow.parser
    # the tests pin fp32 (tiny_overrides), and on a CPU the loss is logged and checked every iteration
    assert parser.get_parsed_content("amp") is False and parser.get_parsed_content("log_every") == 1
    assert parser.get_parsed_content("train#finite_loss_check").check_every == 1
    assert parser.get_parsed_content("train#inferer").autocast_dtype is None


def test_amp_defaults_to_bf16_where_the_device_computes_it_natively(monkeypatch):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"device": "$torch.device('cpu')"})
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        parser.parse()
        assert parser.get_parsed_content("amp") is native
        assert bf16_is_fast(torch.device("cpu")) is native
    assert bf16_is_fast(torch.device("cuda"))


def test_amp_reaches_the_inferers_on_any_device_and_the_engines_keep_no_float16_scaler(tmp_path):
    """MONAI's engines autocast for "cuda" only, so ``amp`` is the inferers' switch: bf16 on this CPU too, and no
    ``GradScaler`` (bf16 keeps float32's exponent range: nothing to scale)."""
    (tmp_path / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({**tiny_overrides(tmp_path), "amp": True, "show_progress": False})
    for inferer in ("train#inferer", "validate#inferer"):
        assert parser.get_parsed_content(inferer).autocast_dtype == torch.bfloat16
    assert parser.get_parsed_content("train#trainer").amp is False
    assert parser.get_parsed_content("validate#evaluator").amp is False
    scoring = ConfigParser()
    scoring.read_config(str(CONFIGS / "inference.json"))
    scoring.update({"amp": True})
    assert scoring.get_parsed_content("inferer", lazy=False).autocast_dtype == torch.bfloat16


def test_log_every_sets_the_loss_logs_and_the_finite_check(tmp_path):
    (tmp_path / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({**tiny_overrides(tmp_path), "log_every": 5, "show_progress": False})
    stats, tensorboard = parser.get_parsed_content("train#handlers#1"), parser.get_parsed_content("train#handlers#2")
    assert [i for i in range(1, 16) if stats.iteration_log(None, i)] == [5, 10, 15]
    assert tensorboard.iteration_log == 5
    assert parser.get_parsed_content("train#finite_loss_check").check_every == 5
