import json

import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.data.phantoms import ensure_phantom_dataset
from monai_diff3m.experiments.defaults_study import RESULT_FILE, SCORES_FILE, main, parse_schedule
from monai_diff3m.inferers import SCORE_NAMES

from tiny_bundle import TINY_NETWORK

pytestmark = pytest.mark.slow  # bundle runs, trainings or second processes: seconds per test


def test_study_trains_each_config_and_seed_and_scores_validation_only(tmp_path):
    phantoms = ensure_phantom_dataset(tmp_path / "films", num_train=8, num_val=12, num_test=4, image_size=32, seed=2)
    table = pd.concat([pd.read_csv(phantoms[split]) for split in ("train", "valid", "test")], ignore_index=True)
    table[schema.NO_FINDING] = table[schema.NO_FINDING].where(table[schema.NO_FINDING] == 1.0)
    csv = tmp_path / "films" / "labels.csv"
    table.to_csv(csv, index=False)
    common = {"max_epochs": 1, "batch_size": 8, "ehr_groups": ["demographics"], **TINY_NETWORK}
    argv = [
        "--dataset-csv",
        str(csv),
        "--work-dir",
        str(tmp_path / "study"),
        "--seeds",
        "0",
        "1",
        "--config",
        'image_only={"ieca_mode": "none"}',
        "--set",
        json.dumps(common),
        "--schedules",
        "stochastic:50:2",
        "ddim_inversion:10:1",
    ]
    summary = main(argv)

    for config in ("image_only",):
        for seed in (0, 1):
            result = json.loads((tmp_path / "study" / config / f"seed{seed}" / RESULT_FILE).read_text())
            assert set(result["validation_auroc"]) == {"stochastic L=50 steps=2", "ddim_inversion L=10 steps=1"}
            scores = pd.read_csv(tmp_path / "study" / config / f"seed{seed}" / SCORES_FILE)
            valid = pd.read_csv(tmp_path / "study" / "split" / "valid.csv")
            assert len(scores) == len(valid) and scores["label"].sum() == valid[schema.NO_FINDING].isna().sum()
            assert {f"stochastic L=50 steps=2|{name}" for name in SCORE_NAMES} <= set(scores.columns)
    assert set(summary["count"]) == {2}
    assert len(summary) == 2 * 2 * len(SCORE_NAMES)  # schedules x (score, its EHR-normalised form)
    assert summary["mean"].is_monotonic_decreasing
    assert parse_schedule("stochastic:50:full").num_steps is None
