"""A copy of ``bundles/diff3m`` outside the repository passes the zoo's shape check, trains, infers and evaluates.

Every command runs from the copied bundle folder as a Model Zoo user types it, with ``bundle_root`` left at its
default, so whatever the configs read or write must be found through the bundle folder itself. The shape check runs
in this process (the function ``python -m monai.bundle verify_net_in_out`` calls, with the same arguments).
"""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from monai.bundle import verify_net_in_out

from tiny_bundle import BUNDLE, TINY_NETWORK, TINY_PHANTOMS

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

#: Outputs a run leaves in a bundle folder; a copy of the repository's bundle must not carry them along.
RUN_OUTPUTS = ("data", "models", "eval", "outputs", "runs")
PHANTOMS = {**TINY_PHANTOMS, "num_train": 32, "num_val": 16, "num_test": 16}


def _bundle_command(bundle, *arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *arguments], cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_a_copied_bundle_trains_infers_and_evaluates_where_it_lies(tmp_path, monkeypatch):
    bundle = tmp_path / "elsewhere" / "diff3m"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns(*RUN_OUTPUTS))
    training = {"ieca_mode": "pooled", "phantoms": PHANTOMS, "max_epochs": 1, "val_interval": 1, **TINY_NETWORK}
    scoring = {"ieca_mode": "pooled", "num_inference_steps": 2, "noise_level": 100, "num_bootstrap": 50}
    (tmp_path / "training.json").write_text(json.dumps(training))
    (tmp_path / "scoring.json").write_text(json.dumps(scoring))

    monkeypatch.chdir(bundle)  # no checkpoint yet: the network has the architecture metadata.json describes
    verify_net_in_out("network_def", config_file="configs/inference.json", meta_file="configs/metadata.json")
    _bundle_command(
        bundle, "run", "training", "--config_file", "configs/train.json", "--args_file", str(tmp_path / "training.json")
    )
    _bundle_command(
        bundle, "run", "--config_file", "configs/inference.json", "--args_file", str(tmp_path / "scoring.json")
    )
    _bundle_command(
        bundle,
        "run",
        "evaluating",
        "--config_file",
        "['configs/inference.json','configs/evaluate.json']",
        "--args_file",
        str(tmp_path / "scoring.json"),
    )

    assert sorted(path.name for path in (bundle / "models").glob("*.pt")) == [
        "diff3m_pooled_best.pt",
        "diff3m_pooled_last.pt",
    ]
    assert len(pd.read_csv(bundle / "outputs" / "diff3m_pooled" / "scores.csv")) == PHANTOMS["num_test"]
    metrics = json.loads((bundle / "eval" / "diff3m_pooled" / "metrics.json").read_text())
    assert metrics["n"] == PHANTOMS["num_test"] and 0.0 <= metrics["scores"]["mse"]["auroc"] <= 1.0
    assert sorted(path.name for path in (bundle / "runs" / "diff3m_pooled").iterdir()) == ["test", "train"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["elsewhere", "scoring.json", "training.json"]
