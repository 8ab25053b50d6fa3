from monai_diff3m.comparison import DEFAULT_METHODS, METHODS, comparison_table


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
