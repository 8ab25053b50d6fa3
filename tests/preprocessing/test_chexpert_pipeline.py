"""CheXpert preprocessing on generated ``train.csv`` / ``valid.csv`` with CheXpert's real header and path layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.preprocessing import chexpert
from monai_diff3m.preprocessing.common import InputTableError, MissingColumnError

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
).split(",")
FINDING_COLUMNS = HEADER[6:18]


def _table(first_patient: int, patients: int, folder: str, rng: np.random.Generator, certain: bool) -> pd.DataFrame:
    """Rows as CheXpert lists them: per study a frontal view (AP/PA) and often a lateral one."""
    rows = []
    for patient in range(first_patient, first_patient + patients):
        sex = rng.choice(["Male", "Female", "Unknown"], p=[0.48, 0.48, 0.04])
        age = int(rng.integers(18, 91))
        for study in range(1, int(rng.integers(1, 4)) + 1):
            labels = dict.fromkeys(HEADER[5:], np.nan)
            if rng.random() < 0.4:
                labels["No Finding"] = 1.0
            else:
                findings = rng.choice(FINDING_COLUMNS, 2, replace=False)
                labels[findings[0]] = 1.0 if certain or rng.random() < 0.7 else -1.0
                labels[findings[1]] = 0.0 if certain else -1.0
            labels["Support Devices"] = rng.choice([np.nan, 1.0, -1.0], p=[0.7, 0.2, 0.1])
            base = f"CheXpert-v1.0-small/{folder}/patient{patient:05d}/study{study}"
            view = rng.choice(["AP", "PA", "LL"], p=[0.6, 0.35, 0.05])
            rows.append([f"{base}/view1_frontal.jpg", sex, age, "Frontal", view, *labels.values()])
            if rng.random() < 0.5:
                rows.append([f"{base}/view2_lateral.jpg", sex, age, "Lateral", np.nan, *labels.values()])
    return pd.DataFrame(rows, columns=HEADER)


def write_chexpert(root: Path, seed: int = 0, train_patients: int = 150) -> Path:
    """Write ``train.csv`` and ``valid.csv`` of a CheXpert-v1.0-small layout into ``root`` and return ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    _table(1, train_patients, "train", rng, certain=False).to_csv(root / "train.csv", index=False)
    _table(64541, 20, "valid", rng, certain=True).to_csv(root / "valid.csv", index=False)
    return root


@pytest.fixture
def chexpert_root(tmp_path):
    return write_chexpert(tmp_path / "data" / "CheXpert-v1.0-small")


def _outputs(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(folder / f"{name}.csv") for name in ("train", "valid", "test")}


def test_outputs_are_frontal_patient_split_and_train_holds_normals(chexpert_root, tmp_path):
    summary = chexpert.prepare_chexpert(chexpert_root, tmp_path / "out", seed=3)
    outputs = _outputs(tmp_path / "out")
    expected_columns = list(schema.CSV_COLUMNS)
    for name, frame in outputs.items():
        assert list(frame.columns) == expected_columns, name
        assert (frame[schema.FRONTAL_LATERAL] == schema.FRONTAL).all()
        assert frame[schema.VIEW].isin(schema.VIEW_VALUES).all() and frame[schema.SEX].isin(schema.SEX_VALUES).all()
        layout = r"CheXpert-v1\.0-small/(train|valid)/patient\d{5}/study\d/view1_frontal\.jpg$"
        assert frame[schema.PATH].str.match(layout).all()
        assert (frame[schema.PATH].str.split("/").str[2] == frame[schema.PATIENT_ID]).all()
        assert summary["splits"][name]["rows"] == len(frame)
    assert (outputs["train"][schema.NO_FINDING] == 1.0).all()
    assert set(outputs["test"][schema.NO_FINDING]) == set(outputs["valid"][schema.NO_FINDING]) == {0.0, 1.0}
    patients = {name: set(frame[schema.PATIENT_ID]) for name, frame in outputs.items()}
    assert not (
        patients["train"] & patients["valid"]
        or patients["train"] & patients["test"]
        or patients["valid"] & patients["test"]
    )

    raw = pd.concat([pd.read_csv(chexpert_root / "train.csv"), pd.read_csv(chexpert_root / "valid.csv")])
    usable = raw[
        (raw["Frontal/Lateral"] == "Frontal") & raw["AP/PA"].isin(["AP", "PA"]) & raw["Sex"].isin(["Male", "Female"])
    ]
    written = pd.concat(outputs.values())
    evaluation_patients = patients["valid"] | patients["test"]
    train_patient_abnormal = usable[
        ~usable["Path"].str.split("/").str[2].isin(evaluation_patients) & (usable["No Finding"] != 1.0)
    ]
    assert len(written) + len(train_patient_abnormal) == len(usable)
    assert summary["pipeline"]["dropped_lateral"] == int((raw["Frontal/Lateral"] == "Lateral").sum())
    assert (tmp_path / "out" / "summary.json").is_file()


def test_split_is_reproducible_and_seeded(chexpert_root, tmp_path):
    chexpert.prepare_chexpert(chexpert_root, tmp_path / "a", seed=1)
    chexpert.prepare_chexpert(chexpert_root, tmp_path / "b", seed=1)
    chexpert.prepare_chexpert(chexpert_root, tmp_path / "c", seed=2)
    for name in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert (tmp_path / "a" / "test.csv").read_bytes() != (tmp_path / "c" / "test.csv").read_bytes()


def test_paths_follow_the_folder_name_so_the_dataset_root_is_its_parent(tmp_path):
    root = write_chexpert(tmp_path / "renamed")
    chexpert.prepare_chexpert(root, tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "test.csv")[schema.PATH]
    assert written.str.startswith("renamed/").all()

    for name in chexpert.OFFICIAL_TABLES:
        table = pd.read_csv(root / name)
        table["Path"] = table["Path"].str.replace("CheXpert-v1.0-small/", "", regex=False)
        table.to_csv(root / name, index=False)
    chexpert.prepare_chexpert(root, tmp_path / "without_prefix")
    assert pd.read_csv(tmp_path / "without_prefix" / "test.csv")[schema.PATH].equals(written)


def test_uncertain_policy_decides_studies_with_only_uncertain_findings(chexpert_root, tmp_path):
    raw = pd.read_csv(chexpert_root / "train.csv")
    only_uncertain = (
        (raw["No Finding"] != 1.0)
        & ~(raw[FINDING_COLUMNS] == 1.0).any(axis=1)
        & (raw[FINDING_COLUMNS] == -1.0).any(axis=1)
        & (raw["Frontal/Lateral"] == "Frontal")
        & raw["AP/PA"].isin(["AP", "PA"])
        & raw["Sex"].isin(["Male", "Female"])
    )
    assert only_uncertain.sum() > 5
    uncertain_paths = set(raw.loc[only_uncertain, "Path"])
    labels = {}
    for policy in ("abnormal", "normal", "exclude"):
        frame, _ = chexpert.read_chexpert(chexpert_root, policy)
        labels[policy] = frame.set_index(schema.PATH)[schema.NO_FINDING]
    assert (labels["abnormal"][list(uncertain_paths)] == 0.0).all()
    assert (labels["normal"][list(uncertain_paths)] == 1.0).all()
    assert not uncertain_paths & set(labels["exclude"].index)
    others = labels["exclude"].index
    assert labels["abnormal"][others].equals(labels["normal"][others])


def test_missing_column_and_bad_path_name_the_file(chexpert_root, tmp_path):
    raw = pd.read_csv(chexpert_root / "valid.csv")
    raw.drop(columns="AP/PA").to_csv(chexpert_root / "valid.csv", index=False)
    with pytest.raises(MissingColumnError, match=r"valid\.csv: missing column\(s\) \['AP/PA'\]"):
        chexpert.prepare_chexpert(chexpert_root, tmp_path / "out")
    raw.loc[3, "Path"] = "study1/view1_frontal.jpg"
    raw.to_csv(chexpert_root / "valid.csv", index=False)
    with pytest.raises(InputTableError, match=r"valid\.csv: column 'Path' must look like.*'study1/view1_frontal\.jpg'"):
        chexpert.prepare_chexpert(chexpert_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_line(chexpert_root, tmp_path, capsys):
    chexpert.main(
        [
            "--chexpert-root",
            str(chexpert_root),
            "--output",
            str(tmp_path / "out"),
            "--uncertain-policy",
            "exclude",
            "--seed",
            "5",
            "--test-fraction",
            "0.3",
        ]
    )
    assert "normal" in capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "summary.json",
        "test.csv",
        "train.csv",
        "valid.csv",
    ]
    with pytest.raises(SystemExit, match="error: .*train.csv"):
        chexpert.main(["--chexpert-root", str(tmp_path / "missing"), "--output", str(tmp_path / "out")])


def test_every_spelling_the_bundle_reads_is_kept_and_normalised(chexpert_root):
    """Sex ``M``/``F``/``male``/`` female ``, ``frontal`` and ``ap``/``PA Erect``, which the bundle reads
    (``schema.canonical_sex``/``canonical_view``/``canonical_frontal_lateral``), were dropped as "sex_unknown",
    "lateral" or "view_not_ap_pa"; they are kept and written in the bundle's spelling."""
    reference, counts = chexpert.read_chexpert(chexpert_root)
    for name in chexpert.OFFICIAL_TABLES:
        raw = pd.read_csv(chexpert_root / name)
        raw["Sex"] = raw["Sex"].map({"Male": "M", "Female": "female ", "Unknown": "Unknown"})
        raw.loc[raw.index % 3 == 0, "Sex"] = raw["Sex"].str.upper().str.strip()
        raw["Frontal/Lateral"] = raw["Frontal/Lateral"].str.lower()
        raw["AP/PA"] = raw["AP/PA"].map({"AP": "ap", "PA": "PA Erect", "LL": "LL"})
        raw.to_csv(chexpert_root / name, index=False)

    frame, respelled_counts = chexpert.read_chexpert(chexpert_root)

    assert respelled_counts == counts
    pd.testing.assert_frame_equal(frame, reference)


def test_a_sex_or_frontal_lateral_value_the_bundle_refuses_names_file_line_and_value(chexpert_root, tmp_path):
    raw = pd.read_csv(chexpert_root / "valid.csv")
    raw.loc[4, "Sex"] = "Mlae"
    raw.to_csv(chexpert_root / "valid.csv", index=False)
    with pytest.raises(InputTableError, match=r"valid\.csv: column 'Sex', line 6: Sex 'Mlae' is not a sex"):
        chexpert.prepare_chexpert(chexpert_root, tmp_path / "out")
    raw.loc[4, "Sex"] = "Male"
    raw.loc[7, "Frontal/Lateral"] = "Oblique"
    raw.to_csv(chexpert_root / "valid.csv", index=False)
    with pytest.raises(InputTableError, match=r"valid\.csv: column 'Frontal/Lateral', line 9: .*'Oblique' is neither"):
        chexpert.prepare_chexpert(chexpert_root, tmp_path / "out")


def test_an_image_listed_twice_is_kept_once_when_identical_and_a_named_error_when_not(chexpert_root, capsys):
    """A row repeated in the pooled tables was written twice (and training then refused the CSV)."""
    reference, counts = chexpert.read_chexpert(chexpert_root)
    train, valid = (pd.read_csv(chexpert_root / name) for name in chexpert.OFFICIAL_TABLES)
    first = int(train.index[train["Frontal/Lateral"] == "Frontal"][0])
    path = train.at[first, "Path"]

    pd.concat([valid, train.loc[[first]]]).to_csv(chexpert_root / "valid.csv", index=False)
    capsys.readouterr()
    frame, repeated_counts = chexpert.read_chexpert(chexpert_root)

    pd.testing.assert_frame_equal(frame, reference)
    assert repeated_counts == {**counts, "rows_read": counts["rows_read"] + 1, "dropped_repeated_rows": 1}
    assert (
        f"1 row repeats an earlier row exactly (e.g. Path {path!r}: train.csv line {first + 2} and valid.csv line "
        f"{len(valid) + 2}): kept once" in capsys.readouterr().err
    )
    changed = train.loc[[first]].assign(Age=train.at[first, "Age"] + 1)
    pd.concat([valid, changed]).to_csv(chexpert_root / "valid.csv", index=False)
    with pytest.raises(
        InputTableError,
        match=rf"Path '{path}' is on two rows that differ, train\.csv line {first + 2} \(.*\) and valid\.csv line "
        rf"{len(valid) + 2} \(.*\); give it one row",
    ):
        chexpert.read_chexpert(chexpert_root)


def test_tables_that_leave_no_image_name_what_dropped_them(chexpert_root, tmp_path):
    for name in chexpert.OFFICIAL_TABLES:
        pd.read_csv(chexpert_root / name).assign(Sex="Unknown").to_csv(chexpert_root / name, index=False)
    with pytest.raises(
        SystemExit,
        match=r"error: .*: no frontal AP/PA image of known sex is left of \d+ rows \(dropped: .*sex_unknown \d+",
    ):
        chexpert.main(["--chexpert-root", str(chexpert_root), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
