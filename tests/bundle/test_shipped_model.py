import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from monai_diff3m.checkpoints import checkpoint_metadata, network_from_checkpoint
from monai_diff3m.export_model import CARD_FIELDS, export_model
from monai_diff3m.inferers import DEFAULT_SCORE

from dicom_files import write_dicom
from tiny_bundle import BUNDLE, REPO_ROOT, run_workflow

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

CARD = {
    "training_command": "python -m monai.bundle run training ...",
    "training_data": "tiny phantoms",
    "data_licence": "generated",
    "test_metrics": {"lowpass_mse": {"auroc": 0.5}},
}


def test_export_writes_weights_statistics_and_card(trained_bundle, tmp_path):
    source = trained_bundle / "models" / "diff3m_pooled_best.pt"
    output = export_model(source, CARD, tmp_path / "models" / "model.pt")

    metadata = checkpoint_metadata(output)
    assert metadata["model_card"] == CARD
    assert metadata["ehr_statistics_file"] == "model_ehr_statistics.json"
    assert (tmp_path / "models" / "model_ehr_statistics.json").read_text() == (
        trained_bundle / "models" / checkpoint_metadata(source)["ehr_statistics_file"]
    ).read_text()
    assert json.loads((tmp_path / "models" / "model_card.json").read_text()) == CARD
    exported, trained = network_from_checkpoint(output), network_from_checkpoint(source)
    for (name, value), (_, expected) in zip(exported.state_dict().items(), trained.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    assert set(torch.load(output, weights_only=True)) == {"network", "metadata"}  # no optimizer state shipped


def test_a_model_without_its_card_does_not_ship(trained_bundle, tmp_path):
    card = {name: CARD[name] for name in CARD_FIELDS if name != "test_metrics"}
    with pytest.raises(ValueError, match=r"model card lacks \['test_metrics'\]"):
        export_model(trained_bundle / "models" / "diff3m_pooled_best.pt", card, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_the_shipped_model_scores_real_films_with_no_training(tmp_path):
    """Right after install: inference.json with no model trained anywhere scores NIH films with models/model.pt,
    under the current configs (a change of the default network that the shipped model no longer fits fails here)."""
    films = REPO_ROOT / "tests" / "data" / "nih64"
    overrides = {"bundle_root": str(tmp_path), "image_dir": str(films), "ehr_csv": str(films / "labels.csv")}
    workflow = run_workflow("inference.json", "inference", overrides)

    shipped = BUNDLE / "models" / "model.pt"
    assert Path(workflow.parser.get_parsed_content("checkpoint")).resolve() == shipped.resolve()
    scores = pd.read_csv(tmp_path / "outputs" / "model" / "scores.csv")
    assert len(scores) == len(pd.read_csv(films / "labels.csv"))
    assert scores["anomaly_score"].notna().all() and (scores["anomaly_score"] == scores[DEFAULT_SCORE]).all()
    assert checkpoint_metadata(shipped)["model_card"]["test_metrics"][DEFAULT_SCORE]["auroc"] > 0.5
    # its reference normals were scored with today's default schedule, so every film gets its percentile
    assert scores["anomaly_percentile"].between(0, 100).all()


def test_a_named_model_folder_never_falls_back_to_the_shipped_model(tmp_path):
    films = REPO_ROOT / "tests" / "data" / "nih64"
    overrides = {"bundle_root": str(tmp_path), "ckpt_dir": str(tmp_path / "mine"), "image_dir": str(films)}
    with pytest.raises(Exception) as raised:
        run_workflow("inference.json", "inference", overrides)
    error: BaseException | None = raised.value
    messages = []
    while error is not None:  # MONAI wraps the error of a config expression in its own
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    assert any(f"{tmp_path / 'mine'}" in message and "not found; train first" in message for message in messages)


def test_fine_tuning_starts_from_the_shipped_weights(tmp_path):
    """train.json's --init_checkpoint: the network that training starts from is the shipped model."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    shipped = BUNDLE / "models" / "model.pt"
    parser.update({"bundle_root": str(tmp_path), "init_checkpoint": str(shipped), "ehr_groups": ["demographics"]})
    network = parser.get_parsed_content("network")
    expected = torch.load(shipped, weights_only=True)["network"]
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


def test_the_shipped_model_scores_dicom_files_with_no_training(tmp_path):
    """The README's --dicom_dir command right after install: three NIH films as 12-bit DICOM with their tags."""
    films = REPO_ROOT / "tests" / "data" / "nih64"
    table = pd.read_csv(films / "labels.csv").head(3)
    for index, row in enumerate(table.to_dict("records")):
        pixels = np.asarray(Image.open(films / row["Path"]), dtype=np.uint16) * 16
        write_dicom(
            tmp_path / "dicoms" / f"film{index}.dcm",
            pixels,
            PatientSex=row["Sex"][0],
            PatientAge=f"{int(row['Age']):03d}Y",
            ViewPosition=row["AP/PA"],
        )
    run_workflow("inference.json", "inference", {"bundle_root": str(tmp_path), "dicom_dir": str(tmp_path / "dicoms")})

    scores = pd.read_csv(tmp_path / "outputs" / "model" / "scores.csv")
    assert len(scores) == 3 and scores["anomaly_score"].notna().all()
    assert sorted(scores["Sex"]) == sorted(table["Sex"]) and (tmp_path / "outputs" / "model" / "report.html").is_file()


def test_a_gradient_and_a_strip_are_failures_csv_rows_and_the_films_beside_them_are_scored(tmp_path):
    """Issue 21: a smooth gradient ranked among the most normal films, and a 5000 x 20 strip was squashed and scored."""
    films = REPO_ROOT / "tests" / "data" / "nih64"
    table = pd.read_csv(films / "labels.csv").head(3)
    (tmp_path / "images").mkdir()
    for relative in table["Path"]:
        (tmp_path / relative).write_bytes((films / relative).read_bytes())
    ramp = np.linspace(0.2, 0.8, 256)[None].repeat(256, axis=0)
    probes = {
        "gradient.png": (ramp * 255).round().astype(np.uint8),
        "faint_gradient.png": ((0.5 + (ramp - 0.5) / 15) * 255).round().astype(np.uint8),
        "strip.png": np.asarray(Image.open(films / table["Path"][0]).crop((30, 0, 34, 64)).resize((20, 5000))),
    }
    for name, pixels in probes.items():
        Image.fromarray(pixels).save(tmp_path / "images" / name)
    rows = pd.DataFrame({"Path": [f"images/{name}" for name in probes], "Sex": "Female", "Age": 50, "AP/PA": "PA"})
    pd.concat([table, rows]).to_csv(tmp_path / "ehr.csv", index=False)

    overrides = {"image_dir": str(tmp_path / "images"), "ehr_csv": str(tmp_path / "ehr.csv")}
    run_workflow("inference.json", "inference", {"bundle_root": str(tmp_path), **overrides})

    scores = pd.read_csv(tmp_path / "outputs" / "model" / "scores.csv")
    assert sorted(Path(path).name for path in scores["image"]) == sorted(Path(path).name for path in table["Path"])
    failures = pd.read_csv(tmp_path / "outputs" / "model" / "failures.csv")
    reasons = dict(zip(failures["path"].map(lambda path: Path(path).name), failures["reason"]))
    assert set(reasons) == set(probes)
    assert "no edges, no anatomy" in reasons["gradient.png"]
    assert "too few grey levels" in reasons["faint_gradient.png"]
    assert "not shaped like a chest film: 20 x 5000 pixels" in reasons["strip.png"]
