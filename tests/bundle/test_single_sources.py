"""Settings with one source: the phantoms the bundle generates follow ``image_size`` instead of being made at 64
pixels and silently resized, and every checkpoint name comes from ``checkpoints.checkpoint_name``."""

import re

import pytest
from monai.bundle import ConfigParser

from tiny_bundle import CONFIGS


@pytest.mark.parametrize(
    ("configs", "overrides", "expected"),
    [
        (["train.json"], {}, 64),
        (["train.json"], {"image_size": 128}, 128),
        (["train.json", "reference.json"], {}, 256),
    ],
)
def test_the_generated_phantoms_follow_image_size(configs, overrides, expected):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in configs])
    parser.update(overrides)
    assert parser.get_parsed_content("image_size") == expected
    assert parser.get_parsed_content("phantoms")["image_size"] == expected


def test_checkpoint_names_are_made_only_by_checkpoint_name():
    """No config spells a checkpoint name or its ``_pcm`` suffix; overlays set what the run is (``pcm_stage``,
    ``checkpoint_preset``) and the names follow, the same for training, stage 2 and scoring."""
    for config in CONFIGS.glob("*.json"):
        assert not re.search(r"diff3m_|'_pcm'", config.read_text()), config.name

    def name(configs, key="checkpoint_name", **overrides):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / config) for config in configs])
        parser.update(overrides)
        return parser.get_parsed_content(key)

    assert name(["train.json"]) == "diff3m_spatial"
    assert name(["train.json", "train_pcm.json"], ieca_mode="pooled") == "diff3m_pooled_pcm"
    assert name(["train.json", "train_pcm.json"], "stage1_checkpoint", ckpt_dir="m") == "m/diff3m_spatial_best.pt"
    assert name(["train.json", "reference.json"]) == "diff3m_reference"
    assert name(["train.json", "reference.json", "train_pcm.json"]) == "diff3m_reference_pcm"
    assert name(["inference.json"], ieca_mode="pooled", use_pcm=True) == "diff3m_pooled_pcm"
    assert name(["inference.json", "evaluate.json", "reference_scoring.json"]) == "diff3m_reference_pcm"


def test_the_noise_schedule_is_written_once_and_travels_with_the_checkpoint():
    """``train.json`` builds its scheduler from ``scheduler_args`` and records them in the checkpoint; scoring reads
    them back (``checkpoints.noise_scheduler``) instead of repeating the block."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")])
    parser.update({"scheduler_args#beta_end": 0.03})
    assert parser.get_parsed_content("checkpoint_metadata")["scheduler_args"]["beta_end"] == 0.03
    assert float(parser.get_parsed_content("scheduler").betas[-1]) == pytest.approx(0.03)
    for config in ("inference.json", "reference.json", "reference_scoring.json"):
        assert "beta_end" not in (CONFIGS / config).read_text(), config


#: Keys every entry config defines the same way: they name where a bundle run reads and writes and how it starts.
SHARED_KEYS = ("bundle_root", "ckpt_dir", "dataset_dir", "device", "seed", "show_progress", "checkpoint_preset")


def test_the_entry_configs_define_their_shared_keys_identically():
    """``train.json`` and ``inference.json`` each run alone (``--config_file train.json``), so MONAI gives them no
    common file that survives moving the bundle; this keeps their shared keys from drifting apart instead."""
    train, inference = (ConfigParser.load_config_file(str(CONFIGS / name)) for name in ("train.json", "inference.json"))
    for key in SHARED_KEYS:
        assert train[key] == inference[key], key
