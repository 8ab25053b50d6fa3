import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.data.splits import SplitError, patient_ids, split_by_patient, write_patient_splits


def _table(seed: int = 0) -> pd.DataFrame:
    """40 patients with 1-6 films each; a third all-normal, a third all-abnormal, a third mixed; blank = abnormal."""
    rows = []
    for patient in range(40):
        for film in range(1 + (patient * 7) % 6):
            normal = patient % 3 == 0 or (patient % 3 == 2 and film % 2 == 0)
            rows.append(
                {
                    schema.PATH: f"images/{patient:03d}_{film}.png",
                    "Patient ID": patient,
                    schema.NO_FINDING: 1.0 if normal else None,
                }
            )
    return pd.DataFrame(rows)


def test_patients_never_cross_splits_and_counts_follow_the_targets():
    table = _table()
    split = split_by_patient(table, valid_fraction=0.2, test_fraction=0.3, seed=0)
    assert set(split) == {"train", "valid", "test"}
    assert table.assign(split=split).groupby("Patient ID")["split"].nunique().max() == 1
    normal = table[schema.NO_FINDING] == 1.0
    shares = split[normal].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.5, abs=0.08) and shares["test"] == pytest.approx(0.3, abs=0.08)
    abnormal_shares = split[~normal].value_counts(normalize=True)
    assert abnormal_shares.get("train", 0.0) < 0.1 and abnormal_shares["test"] == pytest.approx(0.6, abs=0.1)


def test_same_seed_same_split_whatever_the_row_order_and_other_seed_differs():
    table = _table()
    first = split_by_patient(table, seed=3)
    shuffled = table.sample(frac=1.0, random_state=1)
    assert split_by_patient(shuffled, seed=3).sort_index().equals(first)
    assert not split_by_patient(table, seed=4).equals(first)


def test_write_patient_splits_keeps_only_normals_for_training(tmp_path):
    csv = tmp_path / "labels.csv"
    _table().to_csv(csv, index=False)
    paths = write_patient_splits(csv, tmp_path / "splits", seed=0)
    train, valid, test = (pd.read_csv(paths[name]) for name in ("train", "valid", "test"))
    assert (train[schema.NO_FINDING] == 1.0).all()
    assert valid[schema.NO_FINDING].isna().any() and (valid[schema.NO_FINDING] == 1.0).any()
    assert not set(train["Patient ID"]) & set(test["Patient ID"])
    assert list(train.columns) == list(_table().columns)


def test_patient_from_chexpert_or_mimic_path_and_clear_errors():
    table = pd.DataFrame(
        {
            schema.PATH: [
                "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
                "files/p10/p10000032/s50414267/abc.jpg",
            ]
        }
    )
    assert patient_ids(table).tolist() == ["patient00001", "p10000032"]
    with pytest.raises(SplitError, match="cannot tell patients apart.*'images/x.png'"):
        patient_ids(pd.DataFrame({schema.PATH: ["images/x.png"]}), "labels.csv")
    with pytest.raises(SplitError, match="labels.csv: column 'Patient ID' is empty in row\\(s\\) \\[3\\]"):
        patient_ids(pd.DataFrame({schema.PATH: ["a", "b"], "Patient ID": [1, None]}), "labels.csv")
    with pytest.raises(SplitError, match="needs normal"):
        split_by_patient(pd.DataFrame({schema.PATH: ["a", "b"], "Patient ID": [1, 2], schema.NO_FINDING: [1.0, 1.0]}))
