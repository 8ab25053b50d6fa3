import json

import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.data.phantoms import ensure_phantom_dataset
from monai_diff3m.experiments.comparison import EHR_ONLY, EHR_ONLY_SCORE, compare, comparison_table, csv_dataset
from monai_diff3m.transforms import ehr

from tiny_bundle import TINY_NETWORK

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test


def test_csv_dataset_main_job_has_ehr_rows_findings_and_a_patient_split(tmp_path):
    """The main job on a CheXpert-style CSV: blank No Finding, NIH-style Patient ID and Finding columns."""
    phantoms = ensure_phantom_dataset(tmp_path / "films", num_train=32, num_val=24, num_test=24, image_size=32, seed=1)
    table = pd.concat([pd.read_csv(phantoms[split]) for split in ("train", "valid", "test")], ignore_index=True)
    table["Patient ID"] = table.index // 2
    table["Finding"] = table[schema.LESION].fillna("")
    table[schema.NO_FINDING] = table[schema.NO_FINDING].where(table[schema.NO_FINDING] == 1.0)
    csv = tmp_path / "films" / "labels.csv"
    table.drop(columns=[schema.PATIENT_ID, schema.LESION, schema.MASK]).to_csv(csv, index=False)

    dataset = csv_dataset(str(csv), None, str(tmp_path / "bundle"), split_seed=0, image_size=None)
    assert dataset.train_overrides["ehr_groups"] == ["demographics", "measurements"]
    dataset.score_overrides.update(num_inference_steps=2, noise_level=100, num_bootstrap=50)
    splits = {name: pd.read_csv(path) for name, path in dataset.csvs.items()}
    assert not set(splits["train"]["Patient ID"]) & (
        set(splits["valid"]["Patient ID"]) | set(splits["test"]["Patient ID"])
    )
    common = {"bundle_root": str(tmp_path / "bundle"), "max_epochs": 1, "batch_size": 8, **TINY_NETWORK}
    results = compare(dataset, ["Diff3M (EHR, spatial IECA)", "Image-only diffusion"], [0], common, num_bootstrap=50)

    assert list(results) == [
        "Diff3M (EHR, spatial IECA)",
        "Image-only diffusion",
        EHR_ONLY,
        "Diff3M (EHR, spatial IECA), EHR-normalised",
        "Image-only diffusion, EHR-normalised",
    ]
    diff3m = results["Diff3M (EHR, spatial IECA)"]
    assert diff3m["selected_score"] in diff3m["scores"] and diff3m["bootstrap"]["unit"].startswith("patient")
    assert diff3m["n"] == len(splits["test"]) and diff3m["seed_auroc"] == [
        diff3m["scores"][diff3m["selected_score"]]["auroc"]
    ]
    assert set(diff3m["findings"]) <= {"nodule", "consolidation", "effusion", "cardiomegaly"} and diff3m["findings"]
    one_film = diff3m["one_film_per_patient"]
    assert one_film["n"] == splits["test"]["Patient ID"].nunique() and 0.0 <= one_film["auroc"] <= 1.0
    assert results[EHR_ONLY]["one_film_per_patient"]["n"] == one_film["n"]
    (paired,) = diff3m["seed_paired_vs_image_only"]
    baseline = results["Image-only diffusion"]
    assert paired["difference"] == pytest.approx(
        diff3m["seed_auroc"][0] - baseline["scores"][paired["scores"][1]]["auroc"], abs=1e-9
    )
    assert paired["scores"] == [diff3m["selected_score"], baseline["selected_score"]]
    assert not baseline["seed_paired_vs_image_only"]
    assert 0.0 <= results[EHR_ONLY]["scores"][EHR_ONLY_SCORE]["auroc"] <= 1.0
    assert {"male", "Age", "AP", "BMI missing"} <= set(results[EHR_ONLY]["coefficients"])
    table_text = comparison_table(results)
    assert EHR_ONLY in table_text and "_ehr_normalised" in table_text and "1st film/patient" in table_text
    json.dumps(results)


def test_films_without_demographics_train_both_models_and_skip_the_ehr_rows(tmp_path, monkeypatch):
    """ZhangLab-style CSV: Sex and Age empty for every film, one view, no MIMIC columns. The image-only model must not
    demand the EHR; the EHR model treats it as missing and the log says so; the EHR rows, which need EHR, are left
    out."""
    phantoms = ensure_phantom_dataset(tmp_path / "films", num_train=24, num_val=16, num_test=16, image_size=32, seed=2)
    table = pd.concat([pd.read_csv(phantoms[split]) for split in ("train", "valid", "test")], ignore_index=True)
    table[schema.NO_FINDING] = table[schema.NO_FINDING].where(table[schema.NO_FINDING] == 1.0)
    table[schema.SEX] = None
    table[schema.AGE] = None
    table[schema.VIEW] = "AP"
    table["Patient ID"] = table.index
    csv = tmp_path / "films" / "labels.csv"
    table[[schema.PATH, schema.SEX, schema.AGE, schema.VIEW, schema.NO_FINDING, "Patient ID"]].to_csv(csv, index=False)

    dataset = csv_dataset(str(csv), None, str(tmp_path / "bundle"), split_seed=0, image_size=None)
    assert dataset.train_overrides["ehr_groups"] == ["demographics"]
    dataset.score_overrides.update(num_inference_steps=2, noise_level=100, num_bootstrap=50)
    common = {"bundle_root": str(tmp_path / "bundle"), "max_epochs": 1, "batch_size": 8, **TINY_NETWORK}
    warned: list[str] = []
    # the bundle's logging.conf replaces the root handlers (caplog's too), so the warning is caught at its source
    monkeypatch.setattr(ehr.logger, "warning", lambda message, *args: warned.append(message % args))
    results = compare(dataset, ["Diff3M (EHR, spatial IECA)", "Image-only diffusion"], [0], common, 50)

    assert list(results) == ["Diff3M (EHR, spatial IECA)", "Image-only diffusion"]
    for metrics in results.values():
        assert 0.0 <= metrics["scores"][metrics["selected_score"]]["auroc"] <= 1.0
    assert {message.split(" is missing")[0] for message in warned} == {"EHR field 'Age'", "EHR field 'Sex'"}
    assert all("ieca_mode='spatial'" in message for message in warned)
