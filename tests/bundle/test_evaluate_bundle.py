import json
import sys

import pandas as pd
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_diff3m import schema
from monai_diff3m.checkpoints import network_from_checkpoint
from monai_diff3m.data.phantoms import render_case
from monai_diff3m.inferers import DEFAULT_SCORE, SCORE_NAMES, Diff3MAnomalyInferer, image_scores
from monai_diff3m.transforms import EncodeEHRd

from tiny_bundle import EVALUATE, run_workflow, scoring_overrides

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test

FAST_SCORING = {"num_inference_steps": 2, "noise_level": 100, "num_bootstrap": 100}


def test_evaluation_writes_metrics_curves_and_tensorboard(trained_bundle, tmp_path):
    run_workflow(
        EVALUATE, "evaluating", scoring_overrides(trained_bundle, output_dir=str(tmp_path / "eval"), **FAST_SCORING)
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 48 and metrics["n_abnormal"] == 24
    assert metrics["schedule"] == "ddim_inversion L=100 steps=2"  # how these films were scored
    for name in SCORE_NAMES:
        values = metrics["scores"][name]
        assert 0.0 <= values["auroc"] <= 1.0
        assert values["auroc_interval"][0] <= values["auroc"] <= values["auroc_interval"][1]
        assert {"auprc", "best_f1", "best_f1_threshold", "sensitivity_at_95_specificity"} <= set(values)
    assert set(metrics["subgroups"]) == {"Sex", "Age", "AP/PA"}
    assert 0.0 <= metrics["pixel"]["pixel_auroc"] <= 1.0 and metrics["pixel"]["n_lesion_pixels"] > 0
    assert Image.open(tmp_path / "eval" / "roc_pr_curves.png").format == "PNG"
    events = EventAccumulator(str(trained_bundle / "runs" / "diff3m_pooled" / "test"), size_guidance={"images": 0})
    events.Reload()
    assert "test/mse/auroc" in events.Tags()["scalars"]
    assert {"test/roc_pr_curves", "test/top_scoring_films"} <= set(events.Tags()["images"])
    top = events.Images("test/top_scoring_films")
    assert len(top) == 1 and (top[0].width, top[0].height) == (3 * 32, 8 * 32)  # a film a row: input | twin | map
    scores = pd.read_csv(tmp_path / "eval" / "scores.csv")
    assert list(scores.columns[:2]) == ["image", "anomaly_score"]
    assert (scores["anomaly_score"] == scores[DEFAULT_SCORE]).all()
    report = (tmp_path / "eval" / "report.html").read_text()
    assert 'id="metrics"' in report and 'id="subgroups"' in report and "ROC and precision-recall curves" in report


def test_validation_and_test_evaluations_get_their_own_runs_and_tags(trained_bundle, tmp_path):
    """The main job scores validation and test with one checkpoint: both used to write test/... into one run."""
    for split in ("valid", "test"):
        overrides = scoring_overrides(
            trained_bundle,
            output_dir=str(tmp_path / split),
            run_name="phantoms/seed3/diff3m_pooled",
            eval_name=split,
            **FAST_SCORING,
        )
        run_workflow(EVALUATE, "evaluating", overrides)
    for split in ("valid", "test"):
        folder = trained_bundle / "runs" / "phantoms" / "seed3" / "diff3m_pooled" / split
        events = EventAccumulator(str(folder))
        events.Reload()
        assert {tag.split("/")[0] for tag in events.Tags()["scalars"]} == {split}


def test_same_seed_and_config_give_identical_scores(trained_bundle, tmp_path):
    tables = []
    for run in ("first", "second"):
        run_workflow(
            EVALUATE,
            "evaluating",
            scoring_overrides(trained_bundle, output_dir=str(tmp_path / run), noising="stochastic", **FAST_SCORING),
        )
        tables.append(pd.read_csv(tmp_path / run / "scores.csv"))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_trained_model_scores_a_lesion_above_the_same_patient_without_it(trained_bundle):
    """Each film's noise comes from the seed and its own pixels, so a film with a lesion and its lesion-free twin get
    different noise: the scores are averaged over 8 seeds, which makes the comparison about the model, not the draw."""
    network = network_from_checkpoint(trained_bundle / "models" / "diff3m_pooled_best.pt")
    encode = EncodeEHRd(statistics=trained_bundle / "models" / "ehr_statistics_pooled.json")
    inferers = [
        Diff3MAnomalyInferer(DDPMScheduler(1000), noise_level=100, num_steps=5, noising="stochastic", seed=seed)
        for seed in range(8)
    ]
    batches = {}
    for lesion in (None, "nodule", "consolidation"):
        cases = [render_case(seed=7, index=index, image_size=32, lesion=lesion) for index in range(1000, 1008)]
        images = torch.stack([torch.from_numpy(case.image)[None] * 2 - 1 for case in cases])
        columns = (schema.AGE, schema.SEX, schema.VIEW, *schema.MIMIC_EHR_COLUMNS)
        records = [
            dict(
                zip(
                    columns,
                    (
                        c.ehr.age,
                        c.ehr.sex,
                        c.ehr.view,
                        c.ehr.bmi,
                        c.ehr.systolic,
                        c.ehr.diastolic,
                        c.ehr.height,
                        c.ehr.weight,
                    ),
                )
            )
            for c in cases
        ]
        ehr = torch.stack([torch.from_numpy(encode(record)["ehr"]) for record in records])
        batches[lesion] = torch.stack(
            [inferer(images, network.eval(), ehr)["scores"]["mse"] for inferer in inferers]
        ).mean(dim=0)
    assert (batches["nodule"] > batches[None]).all(), batches
    assert (batches["consolidation"] > batches[None]).all(), batches


def test_evaluation_reads_chexpert_blank_no_finding_as_abnormal(trained_bundle, tmp_path):
    """CheXpert leaves ``No Finding`` blank on abnormal rows; evaluation must score and report them, not die."""
    phantoms = trained_bundle / "data" / "phantoms"
    table = pd.read_csv(phantoms / "test.csv")
    table[schema.NO_FINDING] = table[schema.NO_FINDING].where(table[schema.NO_FINDING] == 1.0)
    assert table[schema.NO_FINDING].isna().sum() == 24
    csv = tmp_path / "chexpert_style.csv"
    table.to_csv(csv, index=False)
    run_workflow(
        EVALUATE,
        "evaluating",
        scoring_overrides(
            trained_bundle,
            test_csv=str(csv),
            image_root=str(phantoms),
            output_dir=str(tmp_path / "eval"),
            **FAST_SCORING,
        ),
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 48 and metrics["n_abnormal"] == 24


def test_a_score_of_the_users_own_module_is_scored_evaluated_and_stood_behind(trained_bundle, tmp_path, monkeypatch):
    """The bundle computes the scores ``score_names`` lists, from the package or from a module ``score_modules``
    imports, and evaluates exactly those; ``score`` picks the one ``anomaly_score`` stands behind."""
    (tmp_path / "hospital_scores.py").write_text(
        "import torch\n"
        "from monai_diff3m.inferers import register_image_score\n\n"
        "@register_image_score('p90_smoothed')\n"
        "def p90_smoothed(inputs):\n"
        "    return torch.quantile(inputs.smoothed_map.flatten(1), 0.9, dim=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(image_scores, "_REGISTRY", dict(image_scores._REGISTRY))
    monkeypatch.delitem(sys.modules, "hospital_scores", raising=False)
    overrides = scoring_overrides(
        trained_bundle,
        output_dir=str(tmp_path / "eval"),
        score_modules=["hospital_scores"],
        score_names=["lowpass_mse", "p90_smoothed"],
        score="p90_smoothed",
        **FAST_SCORING,
    )
    run_workflow(EVALUATE, "evaluating", overrides)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["scores"]) == {"lowpass_mse", "p90_smoothed"}
    scores = pd.read_csv(tmp_path / "eval" / "scores.csv")
    assert (scores["anomaly_score"] == scores["p90_smoothed"]).all() and "mse" not in scores.columns
    assert (scores["p90_smoothed"] > 0).all()
