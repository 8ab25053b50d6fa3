"""The README's inference command works, as written, after the README's main job (shortened to tiny phantoms)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from monai_diff3m.experiments.comparison import DEFAULT_METHODS, compare, phantom_dataset

from bundle.tiny_bundle import BUNDLE, TINY_NETWORK, TINY_PHANTOMS

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_inference_command() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- readme:inference-command:start -->\s*```bash\n(.+?)\n```", text, re.DOTALL)
    assert block, "README.md has no inference command between the readme:inference-command markers"
    return shlex.split(block.group(1))


def test_readme_inference_command_scores_the_main_jobs_model(tmp_path):
    """The main job (as ``python -m monai_diff3m.comparison`` runs it, on tiny phantoms for one epoch) writes its
    models where the README's command looks; the command, run from a folder laid out like the clone, scores."""
    bundle_root = tmp_path / "bundles" / "diff3m"
    bundle_root.mkdir(parents=True)
    (bundle_root / "configs").symlink_to(BUNDLE / "configs")
    common = {
        "bundle_root": str(bundle_root),
        "max_epochs": 1,
        "phantoms": TINY_PHANTOMS,
        "batch_size": 16,
        **TINY_NETWORK,
    }
    compare(phantom_dataset(str(bundle_root)), [DEFAULT_METHODS[0]], [0], common, num_bootstrap=20)

    command = readme_inference_command()
    assert command[:4] == ["python", "-m", "monai.bundle", "run"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = bundle_root / "outputs" / "diff3m_spatial"
    scores = pd.read_csv(output / "scores.csv")
    assert len(scores) == TINY_PHANTOMS["num_test"] and scores["anomaly_score"].notna().all()
    assert scores["anomaly_percentile"].between(0, 100).all()  # against the validation normals the job recorded
    assert (output / "report.html").is_file()
    assert "trained on synthetic phantoms" not in result.stderr  # phantoms scoring phantoms: no warning
