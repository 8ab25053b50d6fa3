"""Images of another size than the training size are resized to the checkpoint's ``image_size`` and scored."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.data.phantoms import render_case
from monai_diff3m.handlers import CheckpointWriter
from monai_diff3m.networks import Diff3MUNet
from monai_diff3m.transforms import EHRStatistics, ehr_group_sizes

from bundle.tiny_bundle import run_workflow

NETWORK_ARGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [16, 32],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": 16,
    "norm_num_groups": 16,
    "ieca_mode": "spatial",
    "ehr_group_sizes": ehr_group_sizes(["demographics"]),
    "use_pcm": False,
    "num_train_timesteps": 1000,
}


def write_tiny_checkpoint(bundle_root) -> None:
    """A 32x32 checkpoint as training writes it (untrained weights: only the input handling is under test)."""
    models = bundle_root / "models"
    metadata = {
        "network_args": NETWORK_ARGS,
        "ehr_groups": ["demographics"],
        "image_size": 32,
        "ehr_statistics_file": "ehr_statistics_spatial.json",
    }
    CheckpointWriter(models, {"network": Diff3MUNet(**NETWORK_ARGS)}, "diff3m_spatial_best.pt", metadata=metadata)(
        SimpleNamespace(state=SimpleNamespace(epoch=1))
    )
    EHRStatistics({}, {}).save(models / "ehr_statistics_spatial.json")


def test_smaller_and_larger_images_are_scored_at_the_training_size(tmp_path):
    write_tiny_checkpoint(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    small, large = (render_case(seed=0, index=index, image_size=size).image for index, size in ((0, 48), (1, 128)))
    Image.fromarray((small * 255).round().astype(np.uint8)).save(images / "small.png")
    Image.fromarray((large * 65535).round().astype(np.uint16)).save(images / "large.png")
    pd.DataFrame(
        {
            schema.PATH: ["small.png", "large.png"],
            schema.SEX: ["Male", "Female"],
            schema.AGE: [40, 70],
            schema.VIEW: ["PA", "AP"],
        }
    ).to_csv(tmp_path / "ehr.csv", index=False)
    output = tmp_path / "out"

    run_workflow(
        "inference.json",
        "run",
        {
            "bundle_root": str(tmp_path),
            "output_dir": str(output),
            "image_dir": str(images),
            "ehr_csv": str(tmp_path / "ehr.csv"),
            "num_inference_steps": 2,
            "noise_level": 100,
        },
    )

    scores = pd.read_csv(output / "scores.csv")
    assert sorted(scores["image"].str.split("/").str[-1]) == ["large.png", "small.png"]
    assert np.isfinite(scores["mse"]).all()
    assert pd.read_csv(output / "failures.csv").empty
    widths = {Path(relative).name: Image.open(output / relative).width for relative in scores["map_overlay"]}
    assert widths == {"small.png": 48, "large.png": 128}  # overlays at each film's own size
