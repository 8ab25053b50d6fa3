"""A setting the checkpoint fixes is taken from it or refused, never silently ignored (the scores changed)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image
from reliability.test_inference_image_size import write_tiny_checkpoint

from monai_diff3m import schema
from monai_diff3m.checkpoints import CheckpointSettingError
from monai_diff3m.data.phantoms import render_case

from bundle.tiny_bundle import config_files


def _inputs(tmp_path) -> dict:
    images = tmp_path / "images"
    images.mkdir()
    film = render_case(seed=0, index=0, image_size=32).image
    Image.fromarray((film * 255).round().astype(np.uint8)).save(images / "a.png")
    pd.DataFrame({schema.PATH: ["a.png"], schema.SEX: ["Male"], schema.AGE: [40], schema.VIEW: ["PA"]}).to_csv(
        tmp_path / "ehr.csv", index=False
    )
    return {
        "bundle_root": str(tmp_path),
        "image_dir": str(images),
        "ehr_csv": str(tmp_path / "ehr.csv"),
        "num_inference_steps": 2,
        "noise_level": 100,
    }


@pytest.mark.parametrize(
    "setting, value, trained",
    [
        ("image_size", 64, 32),
        ("ieca_mode", "none", "spatial"),
        ("use_pcm", "true", False),
        ("ehr_groups", ["demographics", "measurements"], ["demographics"]),
        ("intensity_mode", "percentile", "fixed"),
    ],
)
def test_a_setting_that_contradicts_the_checkpoint_is_refused_naming_both_values(tmp_path, setting, value, trained):
    """``--image_size 64`` on a 32x32 model scored without a word; ``--ieca_mode none``/``--use_pcm true`` beside
    ``--checkpoint`` were ignored; an ``--ehr_groups`` mismatch said only "EHR values must have shape (N, 10)"."""
    write_tiny_checkpoint(tmp_path)
    checkpoint = tmp_path / "models" / "diff3m_spatial_best.pt"
    overrides = {**_inputs(tmp_path), "checkpoint": str(checkpoint), setting: value}
    workflow = ConfigWorkflow(config_file=config_files("inference.json"), workflow_type=None, **overrides)
    with pytest.raises(RuntimeError) as refused:  # MONAI wraps the error of a config expression
        workflow.initialize()
    error = refused.value.__cause__
    assert isinstance(error, CheckpointSettingError)
    assert f"--{setting} {value!r} (the checkpoint was trained with {trained!r})" in str(error)
    assert str(checkpoint) in str(error)
    assert not (tmp_path / "outputs").exists()


def test_settings_left_out_come_from_the_checkpoint_and_name_the_output_folder(tmp_path):
    """The default output folder was named after the requested setting, not after the model that was scored."""
    write_tiny_checkpoint(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(tmp_path / "models" / "diff3m_spatial_best.pt", elsewhere / "chest_model_best.pt")
    shutil.copy(tmp_path / "models" / "ehr_statistics_spatial.json", elsewhere)
    overrides = {**_inputs(tmp_path), "checkpoint": str(elsewhere / "chest_model_best.pt"), "image_size": 32}
    workflow = ConfigWorkflow(config_file=config_files("inference.json"), workflow_type=None, **overrides)
    workflow.initialize()  # the settings check passes: 32 is the checkpoint's image size
    parsed = workflow.parser.get_parsed_content
    assert parsed("output_dir") == f"{tmp_path}/outputs/chest_model"
    assert (parsed("ieca_mode"), parsed("ehr_groups"), parsed("intensity_mode")) == (None, ["demographics"], "fixed")
    assert parsed("inferer").use_pcm is False
