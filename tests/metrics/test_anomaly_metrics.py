"""Tests of the anomaly-detection metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.metrics.anomaly_metrics import (
    BOOTSTRAP_METRICS,
    UNKNOWN_GROUP,
    abnormal_labels,
    bootstrap_interval,
    evaluate_table,
    image_metrics,
    paired_bootstrap_difference,
    pixel_metrics,
    subgroup_metrics,
)
from monai_diff3m.metrics.plots import save_roc_pr_curves


def _separable_cases(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with about 40% abnormal and scores shifted up by one for abnormal cases."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    labels[:2] = (0, 1)
    return labels, rng.normal(size=n) + labels


def test_image_metrics_hand_computed():
    metrics = image_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    # 3 of 4 (abnormal, normal) pairs are ordered correctly.
    assert metrics["auroc"] == pytest.approx(0.75)
    # Thresholds 0.8 (P=1, R=1/2) and 0.35 (P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3.
    assert metrics["auprc"] == pytest.approx(5 / 6)
    # At 0.35: P=2/3, R=1 -> F1 = 0.8, better than 2/3 at 0.8 and at 0.1.
    assert metrics["best_f1"] == pytest.approx(0.8)
    assert metrics["best_f1_threshold"] == pytest.approx(0.35)
    # With 2 normals only FPR 0 is allowed: threshold 0.8 finds 1 of 2 abnormal.
    assert metrics["sensitivity_at_95_specificity"] == pytest.approx(0.5)
    assert (metrics["n"], metrics["n_abnormal"]) == (4, 2)
    assert all(type(value) in (int, float) for value in metrics.values())


def test_image_metrics_perfect_separation():
    metrics = image_metrics([0, 0, 0, 1, 1], [0.0, 0.1, 0.2, 0.7, 0.9])
    for key in ("auroc", "auprc", "best_f1", "sensitivity_at_95_specificity"):
        assert metrics[key] == 1.0
    assert metrics["best_f1_threshold"] == pytest.approx(0.7)


def test_sensitivity_at_95_specificity_allows_one_false_positive_in_twenty():
    normal_scores = np.arange(20.0)
    abnormal_scores = np.array([20, 21, 22, 23, 24, 18.5, 17.5, 16.5, 15.5, 14.5])
    labels = np.r_[np.zeros(20), np.ones(10)]
    metrics = image_metrics(labels, np.r_[normal_scores, abnormal_scores])
    # Threshold 18.5: one false positive (19) = 95% specificity, 6 of 10 abnormal found; 18 would cost two.
    assert metrics["sensitivity_at_95_specificity"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "no abnormal"),
        ([1, 1], [0.1, 0.2], "no normal"),
        ([0, 1, 1], [0.1, 0.2], "2 scores for 3 labels"),
        ([0, 1, 1, 0], [0.1, np.nan, 0.3, np.nan], "2 NaN"),
        ([0, 1, 2], [0.1, 0.2, 0.3], r"labels must be 0 \(normal\) or 1 \(abnormal\); 1 are not"),
        ([0, 1], ["low", "high"], "must be numeric"),
    ],
)
def test_image_metrics_errors(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        image_metrics(labels, scores, name="mse")


def test_bootstrap_metrics_equal_sklearn_on_weighted_cases():
    """The vectorised formulas, fed cumulative counts of a resample, equal sklearn on the repeated cases."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        labels = rng.integers(0, 2, 40)
        labels[:2] = (0, 1)
        scores = rng.integers(0, 6, 40).astype(float)  # many ties
        counts = rng.integers(0, 4, 40)
        counts[:2] = 1
        reference = image_metrics(np.repeat(labels, counts), np.repeat(scores, counts))
        order = np.argsort(-scores, kind="stable")
        ends = np.flatnonzero(np.r_[np.diff(scores[order]) != 0, True])
        true_pos = np.cumsum(counts[order] * labels[order])[None, ends].astype(float)
        false_pos = np.cumsum(counts[order] * (1 - labels[order]))[None, ends].astype(float)
        for metric, formula in BOOTSTRAP_METRICS.items():
            assert formula(true_pos, false_pos)[0] == pytest.approx(reference[metric], abs=1e-12)


@pytest.mark.parametrize("metric", sorted(BOOTSTRAP_METRICS))
def test_bootstrap_interval_contains_estimate_and_narrows(metric):
    small_labels, small_scores = _separable_cases(80, seed=0)
    large_labels, large_scores = _separable_cases(2000, seed=0)
    low, high = bootstrap_interval(small_labels, small_scores, metric, num_samples=500)
    assert low <= image_metrics(small_labels, small_scores)[metric] <= high
    large_low, large_high = bootstrap_interval(large_labels, large_scores, metric, num_samples=500)
    assert large_low <= image_metrics(large_labels, large_scores)[metric] <= large_high
    assert large_high - large_low < (high - low) / 2
    assert bootstrap_interval(small_labels, small_scores, metric, num_samples=500) == (low, high)


def test_bootstrap_interval_plain_skips_one_class_resamples():
    labels = [0, 0, 0, 0, 0, 0, 0, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    # A plain resample misses the single abnormal case with probability (7/8)^8 = 34%; those are skipped, and
    # every remaining resample separates perfectly.
    assert bootstrap_interval(labels, scores, num_samples=300, stratified=False) == (1.0, 1.0)
    low, high = bootstrap_interval(labels, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.65], stratified=False)
    assert 0.0 < low < 6 / 7 < high == 1.0


def test_bootstrap_interval_1000_samples_is_fast():
    import time

    labels, scores = _separable_cases(500, seed=1)
    start = time.perf_counter()
    bootstrap_interval(labels, scores, "auroc", num_samples=1000)
    assert time.perf_counter() - start < 1.0


def test_bootstrap_interval_errors():
    with pytest.raises(ValueError, match="metric 'dice' is not supported"):
        bootstrap_interval([0, 1], [0.1, 0.2], metric="dice")
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([0, 1], [0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="no abnormal"):
        bootstrap_interval([0, 0], [0.1, 0.2])


def test_paired_difference_is_the_metric_difference_with_a_narrower_interval_than_either_method():
    labels, reference = _separable_cases(300, seed=2)
    rng = np.random.default_rng(3)
    # a method that reads the same films as the reference plus a little more signal on the abnormal ones
    scores = reference + 0.3 * labels + 0.05 * rng.normal(size=labels.size)
    result = paired_bootstrap_difference(labels, scores, reference, num_samples=500)
    expected = image_metrics(labels, scores)["auroc"] - image_metrics(labels, reference)["auroc"]
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    low, high = result["interval"]
    assert 0 < low <= result["difference"] <= high
    assert result["share_above_zero"] == 1.0
    reference_low, reference_high = bootstrap_interval(labels, reference, num_samples=500)
    assert high - low < (reference_high - reference_low) / 2


def test_paired_difference_of_a_method_with_itself_is_exactly_zero_and_patients_resample_whole():
    labels, scores = _separable_cases(120, seed=4)
    same = paired_bootstrap_difference(labels, scores, scores.copy(), num_samples=200)
    assert same == {"difference": 0.0, "interval": [0.0, 0.0], "share_above_zero": 0.0}
    patients = np.repeat(np.arange(60), 2)
    by_patient = paired_bootstrap_difference(labels, scores, scores[::-1].copy(), num_samples=200, clusters=patients)
    by_image = paired_bootstrap_difference(labels, scores, scores[::-1].copy(), num_samples=200)
    assert by_patient["difference"] == by_image["difference"]
    assert by_patient["interval"] != by_image["interval"]
    with pytest.raises(ValueError, match="reference scores: 3 scores for 120 labels"):
        paired_bootstrap_difference(labels, scores, [0.1, 0.2, 0.3])


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            schema.SEX: ["Male", "Female", "Male", "Female", "Male", "Female", None, "Male"],
            schema.AGE: [25, 45, 70, 85, 35, 55, 65, np.nan],
            schema.VIEW: ["PA", "AP", "PA", "AP", "PA", "AP", "AP", "PA"],
            schema.NO_FINDING: [1, 0, 0, 1, 0, 1, 0, 1],
            "mse": [0.1, 0.9, 0.8, 0.3, 0.6, 0.2, 0.7, 0.4],
            "max": [0.2, 0.3, 0.9, 0.1, 0.4, 0.8, 0.6, 0.5],
        }
    )


def test_abnormal_labels_inverts_no_finding_only():
    table = _table()
    assert abnormal_labels(table).tolist() == [0, 1, 1, 0, 1, 0, 1, 0]
    table["lesion"] = [0, 1, 1, 0, 1, 0, 1, 0]
    assert abnormal_labels(table, "lesion").tolist() == [0, 1, 1, 0, 1, 0, 1, 0]
    table.loc[2, schema.NO_FINDING] = -1
    with pytest.raises(ValueError, match=r"'No Finding'.*1 rows.*\['-1'\]"):
        abnormal_labels(table)
    with pytest.raises(ValueError, match="label column 'Finding' not in table"):
        abnormal_labels(table, "Finding")


def test_abnormal_labels_reads_blank_no_finding_as_abnormal_like_the_csv_reader():
    """CheXpert leaves ``No Finding`` blank on abnormal studies; the metrics read it as the dataset reader does."""
    table = pd.DataFrame({schema.NO_FINDING: [1.0, None, float("nan"), "", 0, "1"]})
    assert abnormal_labels(table).tolist() == [0, 1, 1, 1, 1, 0]
    assert [schema.anomaly_label(value) for value in table[schema.NO_FINDING]] == [0, 1, 1, 1, 1, 0]


def test_subgroup_metrics_split_counts_and_skips():
    result = subgroup_metrics(_table(), ["mse", "max"])
    sex = result[schema.SEX]
    assert list(sex) == ["Male", "Female", UNKNOWN_GROUP]
    assert (sex["Male"]["n"], sex["Male"]["n_abnormal"]) == (4, 2)
    assert (sex["Female"]["n"], sex["Female"]["n_abnormal"]) == (3, 1)
    # Male: abnormal mse 0.8, 0.6 vs normal 0.1, 0.4 -> perfectly separated.
    assert sex["Male"]["metrics"]["mse"]["auroc"] == 1.0
    # Male max: abnormal 0.9, 0.4 vs normal 0.2, 0.5 -> 3 of 4 pairs.
    assert sex["Male"]["metrics"]["max"]["auroc"] == pytest.approx(0.75)
    assert "no normal case among the 1 rows with Sex = unknown" == sex[UNKNOWN_GROUP]["skipped"]
    age = result[schema.AGE]
    assert list(age) == ["<40", "40-60", "60-80", ">=80", UNKNOWN_GROUP]
    assert [age[band]["n"] for band in age] == [2, 2, 2, 1, 1]
    assert "metrics" in age["<40"] and "no abnormal" in age[">=80"]["skipped"]
    view = result[schema.VIEW]
    assert list(view) == ["AP", "PA"]
    assert (view["AP"]["n"], view["AP"]["n_abnormal"], view["PA"]["n"]) == (4, 2, 4)


def test_subgroup_metrics_errors():
    with pytest.raises(ValueError, match=r"score columns \['ssim'\] not in table"):
        subgroup_metrics(_table(), ["ssim"])
    table = _table()
    table.loc[0, schema.AGE] = -3
    with pytest.raises(ValueError, match="column 'Age': age -3"):
        subgroup_metrics(table, ["mse"])


def test_pixel_metrics_hand_computed():
    mask = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    anomaly_map = np.array([[0.9, 0.4, 0.5], [0.1, 0.2, 0.3], [0.0, 0.0, 0.1]])
    metrics = pixel_metrics([mask], [anomaly_map])
    # Lesion pixels 0.9 and 0.4 beat 7 and 6 of the 7 background pixels.
    assert metrics["pixel_auroc"] == pytest.approx(13 / 14)
    # Threshold 0.4: TP=2, FP=1, FN=0 -> Dice 4/5; 0.9 gives 2/3, 0.3 gives 2/3.
    assert metrics["best_dice"] == pytest.approx(0.8)
    assert metrics["best_dice_threshold"] == pytest.approx(0.4)
    # Precision 1 at recall 1/2, precision 2/3 at recall 1.
    assert metrics["pixel_auprc"] == pytest.approx(5 / 6)
    assert (metrics["n_pixels"], metrics["n_lesion_pixels"]) == (9, 2)
    assert pixel_metrics(mask[None], anomaly_map[None]) == metrics


def test_pixel_metrics_many_maps_and_subsampling():
    rng = np.random.default_rng(0)
    masks = rng.random((200, 64, 64)) > 0.9
    maps = rng.random((200, 64, 64)) + 0.5 * masks
    full = pixel_metrics(masks, maps)
    assert full["n_pixels"] == 200 * 64 * 64
    assert 0.85 < full["pixel_auroc"] < 0.9
    subset = pixel_metrics(masks, maps, max_pixels=100_000)
    assert subset["n_pixels"] == 100_000
    assert subset == pixel_metrics(masks, maps, max_pixels=100_000)
    assert subset["pixel_auroc"] == pytest.approx(full["pixel_auroc"], abs=0.01)


def test_pixel_metrics_errors():
    with pytest.raises(ValueError, match=r"case 1: mask shape \(2, 2\) differs from map shape \(3, 3\)"):
        pixel_metrics([np.eye(2), np.eye(2)], [np.eye(2), np.eye(3)])
    with pytest.raises(ValueError, match="1 masks for 2 maps"):
        pixel_metrics([np.eye(2)], [np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match="pixel maps: no abnormal"):
        pixel_metrics([np.zeros((2, 2))], [np.eye(2)])


def test_evaluate_table_bundles_everything_as_json():
    labels, scores = _separable_cases(120, seed=2)
    rng = np.random.default_rng(2)
    table = pd.DataFrame(
        {
            schema.NO_FINDING: 1 - labels,
            "good": scores,
            "noise": rng.normal(size=labels.size),
            schema.SEX: rng.choice(schema.SEX_VALUES, labels.size),
            schema.AGE: rng.uniform(20, 95, labels.size),
            schema.VIEW: rng.choice(schema.VIEW_VALUES, labels.size),
        }
    )
    report = evaluate_table(table, ["noise", "good"], num_samples=200)
    json.dumps(report, allow_nan=False)
    assert report["best_score"] == "good"
    assert (report["n"], report["n_abnormal"]) == (120, int(labels.sum()))
    good = report["scores"]["good"]
    assert good["auroc"] == image_metrics(labels, scores)["auroc"]
    for metric in ("auroc", "auprc"):
        low, high = good[f"{metric}_interval"]
        assert low <= good[metric] <= high
    assert set(report["subgroups"]) == {schema.SEX, schema.AGE, schema.VIEW}
    assert sum(entry["n"] for entry in report["subgroups"][schema.SEX].values()) == 120
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate_table(table, "good")


def test_save_roc_pr_curves_writes_png(tmp_path):
    labels, scores = _separable_cases(100, seed=4)
    path = save_roc_pr_curves(labels, {"mse": scores, "random": np.linspace(0, 1, 100)}, tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 450)
    assert [entry.name for entry in tmp_path.iterdir()] == ["curves.png"]
    with pytest.raises(ValueError, match="random: 99 scores for 100 labels"):
        save_roc_pr_curves(labels, {"random": np.zeros(99)}, tmp_path / "bad.png")
    assert [entry.name for entry in tmp_path.iterdir()] == ["curves.png"]
