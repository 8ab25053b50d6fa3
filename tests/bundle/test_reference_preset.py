"""The reference preset (``reference.json`` + ``reference_scoring.json``): the authors' settings, end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_diff3m import schema

from tiny_bundle import CONFIGS, TINY_NETWORK

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

REFERENCE = [str(CONFIGS / "train.json"), str(CONFIGS / "reference.json")]
ONE_STEP = {
    "phantoms": {"num_train": 4, "num_val": 2, "num_test": 2, "image_size": 32, "seed": 0},
    "batch_size": 4,
    "max_epochs": 1,
    "val_interval": 1,
    **TINY_NETWORK,
    "network_args#num_res_blocks": 1,
}


def _parser(files: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(overrides)
    return parser


def test_reference_preset_pins_the_authors_settings(tmp_path):
    parser = _parser(REFERENCE, bundle_root=str(tmp_path))
    network_args = {
        key: parser.get_parsed_content(f"network_args#{key}")
        for key in (
            "channels",
            "attention_levels",
            "num_res_blocks",
            "num_head_channels",
            "ieca_mode",
            "use_pcm",
            "token_norm",
            "token_init",
            "query_time_bias",
            "pcm_recombination",
        )
    }
    assert network_args == {
        "channels": [128, 128, 256, 256, 512, 512],
        "attention_levels": [False] * 4 + [True, False],
        "num_res_blocks": 2,
        "num_head_channels": 512,
        "ieca_mode": "pooled",
        "use_pcm": True,
        "token_norm": "per_group",
        "token_init": "normal",
        "query_time_bias": False,
        "pcm_recombination": "soft",
    }
    settings = {
        key: parser.get_parsed_content(key)
        for key in (
            "image_size",
            "image_range",
            "age_range",
            "noise_weight",
            "batch_size",
            "amp",
            "ehr_groups",
            "checkpoint_name",
        )
    }
    assert settings == {
        "image_size": 256,
        "image_range": [0.0, 1.0],
        "age_range": [1.0, 100.0],
        "noise_weight": 0.5,
        "batch_size": 3,
        "amp": False,
        "ehr_groups": ["demographics", "measurements"],
        "checkpoint_name": "diff3m_reference",
    }
    scheduler = parser.get_parsed_content("scheduler")
    assert scheduler.num_train_timesteps == 1000
    torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([1e-4, 0.02]))

    (tmp_path / "models").mkdir()
    tiny = _parser(REFERENCE, bundle_root=str(tmp_path), **ONE_STEP)
    optimizer = tiny.get_parsed_content("optimizer")
    assert type(optimizer).__name__ == "AdamW"
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 0.0
    ema = tiny.get_parsed_content("ema")
    assert ema.decay == 0.9999 and ema.warmup is False
    stage2 = _parser([*REFERENCE, str(CONFIGS / "train_pcm.json")], bundle_root=str(tmp_path))
    assert stage2.get_parsed_content("checkpoint_name") == "diff3m_reference_pcm"
    assert stage2.get_parsed_content("stage1_checkpoint").endswith("/models/diff3m_reference_best.pt")


def test_reference_preset_trains_both_stages_and_scores_with_the_authors_schedule(tmp_path):
    """One optimiser step of each stage and the reference scoring of two images (L shortened to 10 for time)."""
    for extra in ([], [str(CONFIGS / "train_pcm.json")]):
        workflow = ConfigWorkflow(
            config_file=[*REFERENCE, *extra],
            run_id="training",
            workflow_type=None,
            bundle_root=str(tmp_path),
            **ONE_STEP,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 1
    stage1 = torch.load(tmp_path / "models" / "diff3m_reference_best.pt", weights_only=True)
    assert stage1["metadata"]["image_range"] == [0.0, 1.0] and stage1["metadata"]["age_range"] == [1.0, 100.0]
    assert stage1["metadata"]["network_args"]["pcm_recombination"] == "soft"
    assert any(key.startswith("pcm_decoder.") for key in stage1["network"])  # stage 1 already trains the PCM branches

    scoring = [str(CONFIGS / name) for name in ("inference.json", "evaluate.json", "reference_scoring.json")]
    workflow = ConfigWorkflow(
        config_file=scoring,
        run_id="evaluating",
        workflow_type=None,
        bundle_root=str(tmp_path),
        noise_level=10,
        output_dir=str(tmp_path / "eval"),
        num_bootstrap=10,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    inferer = workflow.parser.get_parsed_content("inferer")
    assert inferer.indexing == "authors" and inferer.clip_range == (-1.0, 1.0) and inferer.image_range == (0.0, 1.0)
    assert len(inferer.inversion_steps) == len(inferer.denoising_steps) == 9
    image = workflow.parser.get_parsed_content("dataset")[0]["image"]
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.5
    records = workflow.parser.get_parsed_content("records")
    bmi = [float(r[schema.BMI]) for r in records if not pd.isna(r[schema.BMI])]
    assert workflow.parser.get_parsed_content("ehr_statistics").mean[schema.BMI] == np.mean(
        bmi
    )  # fitted on the scored split
    scores = pd.read_csv(tmp_path / "eval" / "scores.csv")
    assert len(scores) == 2 and {"mse", "mse_normalized", "max", "max_normalized"} <= set(scores.columns)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 2
