"""An error the user can act on is the last line ``python -m monai.bundle run`` prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monai_diff3m.errors import PREFIX, InvalidInputError, MissingInputError, user_error_in

REPO_ROOT = Path(__file__).resolve().parents[1]
NIH64 = REPO_ROOT / "tests" / "data" / "nih64"


def test_user_error_found_through_monai_wrapping():
    try:
        try:
            raise MissingInputError("checkpoint x.pt not found; train first")
        except FileNotFoundError as error:
            raise RuntimeError("Failed to evaluate ConfigExpression") from error
    except RuntimeError as wrapped:
        found = user_error_in(wrapped)
    assert isinstance(found, FileNotFoundError) and str(found) == "checkpoint x.pt not found; train first"
    assert user_error_in(RuntimeError("a bug")) is None
    assert isinstance(InvalidInputError("bad"), ValueError)


@pytest.mark.slow
def test_missing_checkpoint_is_the_last_line(tmp_path):
    """Scoring with a model folder that holds no model (the shipped model stands in only when none is named): the
    'train first' message closes the output, after the traceback."""
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(REPO_ROOT / "bundles" / "diff3m" / "configs" / "inference.json"),
        "--bundle_root",
        str(tmp_path),
        "--ckpt_dir",
        str(tmp_path / "mine"),
        "--image_dir",
        str(NIH64),
        "--ehr_csv",
        str(NIH64 / "labels.csv"),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # this checkout's package, from any folder
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300)
    assert result.returncode == 1
    assert "Traceback" in result.stderr, "the traceback is kept for whoever debugs"
    last_line = result.stderr.strip().splitlines()[-1]
    expected = f"{PREFIX}checkpoint {tmp_path}/mine/diff3m_spatial_best.pt not found; train first"
    assert last_line.startswith(expected), last_line
