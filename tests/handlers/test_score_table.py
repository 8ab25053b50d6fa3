"""The score table writer keeps an output folder consistent: one run at a time, tables grown per batch and promoted
at the end, no stale table pointing at new maps, and a map that cannot be written costs only its own image."""

from __future__ import annotations

import json
import os

import nibabel as nib
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from nibabel.spatialimages import HeaderDataError
from PIL import Image

from monai_diff3m.data.input_files import OUTPUT_FOLDER_MARKER
from monai_diff3m.errors import InvalidInputError
from monai_diff3m.handlers import AnomalyMapWriter, ScoreTableWriter, anomaly_maps
from monai_diff3m.handlers.output_folder import LOCK_FILE, OutputFolderInUseError, OutputFolderNotEmptyError
from monai_diff3m.handlers.score_table import OutputWriteError
from monai_diff3m.inferers import SCORE_NAMES

from run_locks import hold_lock_in_another_process
from scored_batches import evaluator_step

NAMES = [f"img{index}.png" for index in range(6)]


def _batches(names=NAMES, batch_size=2):
    """Batches with their scoring results (values from the image index), see ``evaluator_step``."""
    for start in range(0, len(names), batch_size):
        sources = names[start : start + batch_size]
        values = torch.arange(start, start + len(sources), dtype=torch.float32)
        maps = values[:, None, None, None].expand(-1, 1, 4, 4) / 10
        yield {
            "image": maps.clone(),
            "twin": maps.clone(),
            "anomaly_map": maps.clone(),
            "smoothed_map": maps.clone(),
            "scores": {name: values.clone() for name in SCORE_NAMES},
            "ehr_attention": None,
            "source": sources,
        }


@pytest.fixture(autouse=True)
def films(tmp_path_factory, monkeypatch):
    """The films the records name, in the working folder: maps are written at each film's own size (8x8 here)."""
    folder = tmp_path_factory.mktemp("films")
    for name in [*NAMES, "old.png", "first.png"]:
        Image.new("L", (8, 8), 128).save(folder / name)
    monkeypatch.chdir(folder)


def _run(output_dir, fail_at: int | None = None, names=NAMES, overwrite: bool = False) -> ScoreTableWriter:
    batches = list(_batches(names))

    def step(engine, batch):
        if engine.state.iteration - 1 == fail_at:
            raise RuntimeError("killed")
        return evaluator_step(engine, batch)

    engine = Engine(step)
    writer = ScoreTableWriter(
        output_dir,
        [{"source": name, "image": name} for name in names],
        failures=[("bad.png", "broken")],
        map_writer=AnomalyMapWriter(output_dir),
        overwrite=overwrite,
    )
    writer.attach(engine)
    engine.run(batches, max_epochs=1)
    return writer


def test_tables_are_written_per_batch_and_promoted_at_the_end(tmp_path):
    """``scores.csv`` was written only at the very end: a crash after hours of scoring kept nothing."""
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, fail_at=2)
    partial = pd.read_csv(tmp_path / "scores.partial.csv")
    assert list(partial["image"]) == NAMES[:4] and not (tmp_path / "scores.csv").exists()
    assert not (tmp_path / LOCK_FILE).exists()  # the crashed run freed the folder

    with pytest.raises(OutputFolderNotEmptyError, match="--overwrite true"):
        _run(tmp_path)  # the crashed run's finished batches are results too
    _run(tmp_path, overwrite=True)
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores["image"]) == NAMES and list(scores["mse"]) == list(range(6))
    assert pd.read_csv(tmp_path / "failures.csv").values.tolist() == [["bad.png", "broken"]]
    assert not (tmp_path / "scores.partial.csv").exists() and not (tmp_path / LOCK_FILE).exists()
    assert (tmp_path / OUTPUT_FOLDER_MARKER).exists()


def test_a_rerun_killed_midway_leaves_no_old_table_pointing_at_new_maps(tmp_path):
    """The old ``scores.csv`` of a folder survived a killed rerun and pointed at maps the rerun overwrote."""
    _run(tmp_path, names=["old.png", *NAMES[:3]])
    (tmp_path / "metrics.json").write_text("{}")
    assert (tmp_path / "maps" / "old.nii.gz").exists()

    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, fail_at=1, overwrite=True)

    assert not (tmp_path / "scores.csv").exists() and not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "maps" / "old.nii.gz").exists()  # named by the old table: removed with it
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["img0.nii.gz", "img1.nii.gz"]
    assert list(pd.read_csv(tmp_path / "scores.partial.csv")["map_nifti"]) == ["maps/img0.nii.gz", "maps/img1.nii.gz"]


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_with_a_clear_error(tmp_path):
    """Two runs into one ``--output_dir`` interleaved and the last one's ``scores.csv`` won."""
    other = hold_lock_in_another_process(tmp_path / LOCK_FILE)
    try:
        with pytest.raises(
            OutputFolderInUseError, match=rf"in use by another run \(pid {other.pid} .*{LOCK_FILE} is freed when"
        ):
            _run(tmp_path)
        assert not (tmp_path / "scores.csv").exists() and (tmp_path / LOCK_FILE).exists()
    finally:
        other.kill()
        other.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == other.pid  # left behind by the killed run
    _run(tmp_path)  # a lock whose process is gone (a killed run) is taken over
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 6 and not (tmp_path / LOCK_FILE).exists()


def test_an_empty_lock_file_that_no_process_holds_never_blocks(tmp_path):
    """A full disk left a 0-byte lock file and every rerun was refused ("pid None on None")."""
    (tmp_path / LOCK_FILE).write_bytes(b"")
    _run(tmp_path)
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 6 and not (tmp_path / LOCK_FILE).exists()


def test_a_second_run_never_deletes_the_first_runs_results(tmp_path):
    """A second run into the default output folder removed the first run's scores.csv and maps without a word."""
    _run(tmp_path, names=["first.png"])
    with pytest.raises(OutputFolderNotEmptyError, match=r"not empty .*scores.csv.*--overwrite true"):
        _run(tmp_path)
    assert list(pd.read_csv(tmp_path / "scores.csv")["image"]) == ["first.png"]
    assert (tmp_path / "maps" / "first.nii.gz").exists() and not (tmp_path / LOCK_FILE).exists()
    (tmp_path / "notes.txt").write_text("the user's own file")

    _run(tmp_path, overwrite=True)
    assert list(pd.read_csv(tmp_path / "scores.csv")["image"]) == NAMES
    assert not (tmp_path / "maps" / "first.nii.gz").exists() and (tmp_path / "notes.txt").exists()


def test_a_map_that_cannot_be_written_keeps_its_score_and_fails_the_run_at_the_end(tmp_path, monkeypatch):
    """A map write error (nibabel HeaderDataError for a NaN spacing) killed the run and lost every result; then a
    full disk kept the run at exit 0 while the scores of the images without a map were written nowhere."""
    save = nib.save

    def failing_save(image, path):
        if "img3" in os.fspath(path):  # the temporary file beside maps/img3.nii.gz
            raise HeaderDataError("Could not decompose affine")
        save(image, path)

    monkeypatch.setattr(anomaly_maps.nib, "save", failing_save)
    with pytest.raises(OutputWriteError, match=r"1 anomaly map\(s\) could not be written"):
        _run(tmp_path)

    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores["image"]) == NAMES and list(scores["mse"]) == list(range(6))
    assert scores["map_nifti"].isna().tolist() == [name == "img3.png" for name in NAMES]
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert failures["path"].tolist() == ["bad.png", "img3.png"]
    assert (
        "scores.csv has the scores), but its anomaly map cannot be written: HeaderDataError"
        in failures["reason"].iloc[1]
    )
    assert not (tmp_path / LOCK_FILE).exists()


def test_maps_and_previews_share_one_colour_scale(tmp_path):
    """A map writer and a score table on different scales would show a film hotter in the report than in its PNG."""
    with pytest.raises(InvalidInputError, match="one colour scale"):
        ScoreTableWriter(tmp_path, [], map_writer=AnomalyMapWriter(tmp_path, map_max=0.1), map_max=0.2)
    with pytest.raises(InvalidInputError, match="one colour scale"):
        ScoreTableWriter(tmp_path, [], map_writer=AnomalyMapWriter(tmp_path, image_range=(0, 1)))
