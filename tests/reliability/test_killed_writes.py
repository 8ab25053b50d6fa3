"""A process killed with SIGKILL in the middle of a write leaves the previous file intact and loadable.

The child process below replaces the real serialiser with one that writes half of the new content and then hangs,
so the kill is certain to land inside the write, where a direct (non-atomic) write would leave a truncated file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from monai_diff3m.checkpoints import read_checkpoint
from monai_diff3m.handlers import CheckpointWriter

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

WRITERS = {
    "checkpoint": """
        import torch
        from monai_diff3m.handlers import CheckpointWriter
        real_save = torch.save

        def half_save(obj, path):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            hang_after_half(buffer.getvalue(), path)

        torch.save = half_save
        network = torch.nn.Linear(4, 4)
        torch.nn.init.constant_(network.weight, 2.0)
        engine = types.SimpleNamespace(state=types.SimpleNamespace(epoch=2))
        CheckpointWriter(target.parent, {"network": network}, target.name)(engine)
    """,
    "csv": """
        import pandas as pd
        from monai_diff3m.io import write_csv_atomic

        def half_csv(frame, path, index):
            hang_after_half(frame.to_string().encode(), path)

        frame = pd.DataFrame({"score": [0.9] * 1000})
        pd.DataFrame.to_csv = half_csv
        write_csv_atomic(frame, target)
    """,
}
PRELUDE = """
    import io, sys, time, types
    from pathlib import Path
    target = Path(sys.argv[1])

    def hang_after_half(content, path):
        with open(path, "wb") as handle:
            handle.write(content[: len(content) // 2])
            handle.flush()
        print("half written", flush=True)
        time.sleep(600)
"""


def _kill_while_writing(kind: str, target: Path) -> None:
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(WRITERS[kind])
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        assert line == "half written\n", process.stderr.read()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_killed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    network = torch.nn.Linear(4, 4)
    torch.nn.init.constant_(network.weight, 1.0)
    CheckpointWriter(tmp_path, {"network": network}, "last.pt", metadata={"image_size": 32})(
        SimpleNamespace(state=SimpleNamespace(epoch=1))
    )
    _kill_while_writing("checkpoint", tmp_path / "last.pt")
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["metadata"] == {"image_size": 32}
    torch.testing.assert_close(checkpoint["network"]["weight"], torch.ones(4, 4))
    # the half-written bytes went to a hidden temporary file beside it, which a killed process cannot remove
    leftovers = [path.name for path in tmp_path.iterdir() if path.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.") and leftovers[0].endswith(".tmp.pt")


def test_killed_csv_write_keeps_the_previous_table(tmp_path):
    pd.DataFrame({"score": [0.1, 0.2]}).to_csv(tmp_path / "scores.csv", index=False)
    _kill_while_writing("csv", tmp_path / "scores.csv")
    assert pd.read_csv(tmp_path / "scores.csv")["score"].tolist() == pytest.approx([0.1, 0.2])
