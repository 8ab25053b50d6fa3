import numpy as np
import pandas as pd
import pytest

from monai_diff3m.experiments.comparison import (
    DEFAULT_METHODS,
    IMAGE_ONLY,
    METHODS,
    comparison_table,
    paired_difference_to_image_only,
)


def _metrics(auroc: float, selected: str = "mse") -> dict:
    values = {
        "auroc": auroc,
        "auroc_interval": [auroc - 0.05, auroc + 0.05],
        "auprc": 0.7,
        "auprc_interval": [0.6, 0.8],
        "best_f1": 0.65,
    }
    return {
        "scores": {"mse": values, "p99_smoothed": {**values, "auroc": auroc + 0.01}},
        "selected_score": selected,
        "pixel": {"pixel_auroc": 0.9},
    }


def test_table_reports_each_methods_validated_score_with_intervals():
    table = comparison_table({"Diff3M": _metrics(0.8, "p99_smoothed"), "Image-only": _metrics(0.7)})
    diff3m_row, baseline_row = table.splitlines()[2:]
    assert diff3m_row.startswith("Diff3M") and "p99_smoothed" in diff3m_row and "0.810 [0.750, 0.850]" in diff3m_row
    assert baseline_row.startswith("Image-only") and " mse " in baseline_row and "0.700 [0.650, 0.750]" in baseline_row
    assert "0.900" in baseline_row


def test_a_fixed_score_overrides_the_validated_choice():
    table = comparison_table({"Diff3M": _metrics(0.8, "p99_smoothed")}, score="mse")
    assert "0.800 [0.750, 0.850]" in table.splitlines()[2]


def test_default_methods_differ_only_in_the_ehr_switch():
    assert [METHODS[name]["ieca_mode"] for name in DEFAULT_METHODS] == ["spatial", "none"]


def test_paired_difference_to_image_only_joins_the_two_test_tables_by_film_and_resamples_patients(tmp_path):
    rng = np.random.default_rng(0)
    films = pd.DataFrame(
        {
            "image": [f"/films/{index:03d}.png" for index in range(80)],
            "label": np.tile([0, 1], 40),
            "No Finding": np.tile([1.0, 0.0], 40),
            "Patient": np.arange(80) // 2,
        }
    )
    baseline = films.assign(mse=rng.normal(size=80) + films["label"])
    method = films.assign(lowpass_mse=baseline["mse"] + films["label"])
    paths = {}
    for name, table in (("method", method), ("baseline", baseline)):
        paths[name] = tmp_path / f"{name}.csv"
        table.sample(frac=1.0, random_state=1).to_csv(paths[name], index=False)  # row order must not matter
    rows = {
        "Diff3M": {"selected_score": "lowpass_mse", "score_tables": {"test": str(paths["method"])}},
        IMAGE_ONLY: {"selected_score": "mse", "score_tables": {"test": str(paths["baseline"])}},
    }
    paired = paired_difference_to_image_only(rows, "Diff3M", num_bootstrap=200, seed=0)
    assert paired["scores"] == ["lowpass_mse", "mse"]
    assert paired["difference"] > 0 and 0 < paired["interval"][0] <= paired["difference"] <= paired["interval"][1]

    baseline.iloc[:-1].to_csv(paths["baseline"], index=False)
    with pytest.raises(ValueError, match="scored different test films"):
        paired_difference_to_image_only(rows, "Diff3M", num_bootstrap=200, seed=0)
