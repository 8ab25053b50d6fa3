"""Run a bundle the way users run multi-GPU jobs: ``torchrun --nproc_per_node=2 -m monai.bundle run ...`` on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bundle.tiny_bundle import CONFIGS, REPO_ROOT


def run_torchrun(tmp_path: Path, configs: list[str], run_id: str, overrides: dict, timeout: int = 300) -> str:
    """Run ``configs`` (names in the bundle's configs folder) in 2 gloo processes; return the log, failing on error.

    The workers get this checkout's package whatever is installed (they start in ``tmp_path``), and a session of
    their own, so that a hang kills torchrun's workers too, not only torchrun.
    """
    args_file = tmp_path / f"{run_id}_args.json"
    args_file.write_text(json.dumps(overrides))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        str([str(CONFIGS / name) for name in configs]),
        "--args_file",
        str(args_file),
    ]
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
    assert process.returncode == 0, log[-4000:]
    return log
