"""scores.csv columns, film-resolution maps and the HTML report, from a score table writer fed synthetic batches."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from monai_diff3m.handlers import AnomalyMapWriter, HTMLReportHandler, ScoreTableWriter
from monai_diff3m.inferers import DEFAULT_SCORE, SCORE_NAMES
from monai_diff3m.transforms import ehr_slot_names

from scored_batches import evaluator_step

SLOTS = ehr_slot_names(["demographics", "measurements"])
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"


def _films(folder: Path) -> list[dict]:
    """Three 80x96 films with the EHR a CheXpert CSV has (no measurements); the third has no sex."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index, (sex, age) in enumerate((("Female", 61.0), ("Male", 45.0), (None, 70.0))):
        path = folder / f"film{index}.png"
        gradient = np.linspace(40, 200, 96)[None].repeat(80, axis=0) + 10 * index
        Image.fromarray(gradient.astype(np.uint8)).save(path)
        records.append({"image": str(path), "source": str(path), "Sex": sex, "Age": age, "AP/PA": "PA"})
    return records


def _batch(records: list[dict]) -> dict:
    """A batch with its scoring results (``evaluator_step``) at a 32x32 model size, scores rising from film 0 to 2."""
    count = len(records)
    anomaly_map = torch.zeros(count, 1, 32, 32)
    anomaly_map[:, :, 8:16, 8:16] = torch.tensor([0.1, 0.3, 0.9]).view(count, 1, 1, 1)
    ehr = torch.zeros(count, len(SLOTS))
    missing = torch.ones(count, len(SLOTS))
    for row, record in enumerate(records):
        ehr[row, 0], missing[row, 0] = record["Age"] / 100, 0
        if record["Sex"]:
            ehr[row, SLOTS.index(f"Sex={record['Sex']}")] = 1
            missing[row, 1:3] = 0
        ehr[row, SLOTS.index("AP/PA=PA")], missing[row, 3:5] = 1, 0
    scores = {name: torch.tensor([0.1, 0.2, 0.3]) * (rank + 1) for rank, name in enumerate(SCORE_NAMES)}
    return {
        "image": torch.zeros(count, 1, 32, 32),
        "twin": torch.zeros(count, 1, 32, 32),
        "anomaly_map": anomaly_map,
        "smoothed_map": anomaly_map,
        "scores": scores,
        "ehr_attention": torch.arange(count * len(SLOTS), dtype=torch.float32).view(count, len(SLOTS)),
        "ehr": ehr,
        "ehr_missing": missing,
        "source": [record["source"] for record in records],
    }


def _score(tmp_path: Path, map_max: float | None = None, **table_args) -> Path:
    records = _films(tmp_path / "films")
    output = tmp_path / "out"
    map_writer = AnomalyMapWriter(output, map_max=map_max)
    score_table = ScoreTableWriter(
        output, records, slot_names=SLOTS, map_writer=map_writer, map_max=map_max, **table_args
    )
    engine = Engine(evaluator_step)
    score_table.attach(engine)
    HTMLReportHandler(score_table, warnings=["trained on synthetic phantoms"]).attach(engine)
    engine.run([_batch(records)], max_epochs=1)
    return output


def test_scores_csv_leads_with_the_score_and_reports_attention_only_for_ehr_the_film_had(tmp_path):
    scores = pd.read_csv(_score(tmp_path) / "scores.csv")
    assert list(scores.columns[:2]) == ["image", "anomaly_score"]
    np.testing.assert_allclose(scores["anomaly_score"], scores[DEFAULT_SCORE])
    attention = [column for column in scores.columns if column.startswith("attention[")]
    assert attention == ["attention[Age]", "attention[Sex]", "attention[AP/PA]"]  # no BMI, height, ... columns
    woman, man, unknown = scores.to_dict("records")
    assert woman["attention[Sex]"] == SLOTS.index("Sex=Female")  # her own category's weight, not Sex=Male's
    assert man["attention[Sex]"] == len(SLOTS) + SLOTS.index("Sex=Male")
    assert pd.isna(unknown["attention[Sex]"]) and unknown["attention[Age]"] == 2 * len(SLOTS)


def test_maps_come_at_the_films_resolution_on_one_scale_with_a_legend(tmp_path):
    output = _score(tmp_path, map_max=0.5)
    scores = pd.read_csv(output / "scores.csv")
    assert nib.load(output / scores["map_nifti"].iloc[0]).shape == (80, 96)
    overlays = [np.asarray(Image.open(output / path)) for path in scores["map_overlay"]]
    assert all(overlay.shape[1] == 96 and overlay.shape[0] > 80 for overlay in overlays)  # title and colour bar
    # the same colour scale: the film with the larger map difference is hotter, not equally hot
    heat = [overlay[20 + 30, 36].astype(int) for overlay in overlays]  # below the 20-pixel title, in the lesion
    assert not np.array_equal(heat[1], heat[2])


def test_report_ranks_the_films_and_embeds_every_image(tmp_path):
    report = (_score(tmp_path) / "report.html").read_text()
    names = re.findall(r"<td>(film\d)\.png</td>", report)
    assert names == ["film2", "film1", "film0"]  # highest anomaly score first
    assert report.count('src="data:image/png;base64,') == 3 * 3 and "http" not in report.split("<body>")[1]
    assert "trained on synthetic phantoms" in report and DEFAULT_SCORE in report
    assert "missing: Sex" in report


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    """Chromium opens the single file offline, decodes every embedded image, and the screenshot is kept in docs."""
    report = _score(tmp_path) / "report.html"
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*browser, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert 'data-images="9"' in dom and 'data-images-rendered="9"' in dom and 'data-film-rows="3"' in dom
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [*browser, "--window-size=1100,900", f"--screenshot={screenshot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1100) and pixels.std() > 10  # not a blank page


def test_reference_normals_give_each_film_a_percentile(tmp_path):
    output = _score(tmp_path, reference_scores=[0.28, 0.56, 0.84, 1.12, 1.68])
    scores = pd.read_csv(output / "scores.csv")
    assert list(scores.columns[:3]) == ["image", "anomaly_score", "anomaly_percentile"]
    assert list(scores["anomaly_percentile"]) == [40.0, 80.0, 100.0]  # scores 0.7, 1.4, 2.1
    assert "percent of the reference normal films" in (output / "report.html").read_text()
