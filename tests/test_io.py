"""Tests of the atomic writers: a failed write never damages the previous file or leaves temporary files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monai_diff3m.io import atomic_path, write_csv_atomic, write_json_atomic


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".txt"
        assert not temporary.exists()
        temporary.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [entry.name for entry in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_path_keeps_previous_file_when_writer_raises_midway(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
                raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder .*missing does not exist"):
        with atomic_path(tmp_path / "missing" / "result.txt"):
            pass
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "result.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_converts_numpy_and_rejects_nan(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic({"auroc": np.float64(0.75), "n": np.int64(4), "curve": np.arange(3), "dir": tmp_path}, target)
    assert json.loads(target.read_text()) == {"auroc": 0.75, "n": 4, "curve": [0, 1, 2], "dir": str(tmp_path)}
    with pytest.raises(ValueError, match="metrics.json"):
        write_json_atomic({"auroc": float("nan")}, target)
    with pytest.raises(ValueError, match="not JSON serialisable"):
        write_json_atomic({"model": object()}, target)
    assert json.loads(target.read_text())["auroc"] == 0.75
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.json"]


def test_write_csv_atomic_round_trip_and_compression(tmp_path):
    frame = pd.DataFrame({"Path": ["a.png", "b.png"], "mse": [0.1, 0.2]})
    pd.testing.assert_frame_equal(pd.read_csv(write_csv_atomic(frame, tmp_path / "scores.csv")), frame)
    compressed = write_csv_atomic(frame, tmp_path / "scores.csv.gz")
    assert compressed.read_bytes()[:2] == b"\x1f\x8b"
    pd.testing.assert_frame_equal(pd.read_csv(compressed), frame)
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        write_csv_atomic([1, 2], tmp_path / "list.csv")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["scores.csv", "scores.csv.gz"]


def test_atomic_path_keeps_every_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "map.nii.gz") as temporary:
        assert temporary.name.endswith(".tmp.nii.gz")
        temporary.write_bytes(b"x")
    assert (tmp_path / "map.nii.gz").read_bytes() == b"x"
