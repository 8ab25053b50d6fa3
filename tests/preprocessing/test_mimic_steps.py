"""The five MIMIC steps and their runner on small synthetic tables with the real MIMIC-CXR-JPG / MIMIC-IV schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.preprocessing.common import InputTableError, MissingColumnError
from monai_diff3m.preprocessing.labels import SUPPORT_DEVICES
from monai_diff3m.preprocessing.mimic import (
    layout,
    run_all,
    step1_omr_ehr,
    step2_concatenate,
    step3_join,
    step4_filter_existing,
    step5_summarise,
)
from monai_diff3m.preprocessing.mimic.step3_join import JOINED_COLUMNS
from monai_diff3m.preprocessing.mimic.synthetic import write_synthetic_mimic
from monai_diff3m.preprocessing.splits import SPLIT

FINAL_COLUMNS = [*schema.CSV_COLUMNS, *schema.MIMIC_EHR_COLUMNS]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic")
    write_synthetic_mimic(root / "cxr", root / "iv", images=600, omr_rows=30_000, seed=4)
    return root


@pytest.fixture
def dataset(tables, tmp_path) -> tuple[Path, Path]:
    """A private copy of the tables, so that a test may break them."""
    shutil.copytree(tables, tmp_path / "data")
    return tmp_path / "data" / "cxr", tmp_path / "data" / "iv"


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"dicom_id": str})


def _touch_images(mimic_cxr: Path, paths: list[str]) -> None:
    for relative in paths:
        (mimic_cxr / relative).parent.mkdir(parents=True, exist_ok=True)
        (mimic_cxr / relative).write_bytes(b"\xff\xd8\xff\xd9")


def test_run_all_writes_schema_csvs_with_official_split_labels_and_ehr(dataset, tmp_path, capsys):
    mimic_cxr, mimic_iv = dataset
    run_all.main(
        [
            "--mimic-cxr",
            str(mimic_cxr),
            "--mimic-iv",
            str(mimic_iv),
            "--output",
            str(tmp_path / "out"),
            "--skip-existence-check",
            "--part-images",
            "100",
        ]
    )
    assert "rows with any missing EHR" in capsys.readouterr().out
    outputs = {name: pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in ("train", "valid", "test")}
    metadata = _read(mimic_cxr / f"{layout.METADATA}.csv.gz")
    official = _read(mimic_cxr / f"{layout.SPLIT_TABLE}.csv.gz").set_index("dicom_id")["split"]
    labels = _read(mimic_cxr / f"{layout.LABELS}.csv.gz").set_index(["subject_id", "study_id"])
    patients = _read(mimic_iv / "hosp" / f"{layout.PATIENTS}.csv.gz").set_index("subject_id")
    ehr = _read(tmp_path / "out" / "work" / layout.IMAGE_EHR).set_index("dicom_id")
    images = metadata.set_index("dicom_id")
    for name, frame in outputs.items():
        assert list(frame.columns) == FINAL_COLUMNS
        parts = frame[schema.PATH].str.extract(r"^files/p(\d\d)/p(\d{8})/s(\d{8})/([0-9a-f-]{44})\.jpg$")
        assert parts.notna().all().all()
        dicom = parts[3]
        assert (parts[0] == parts[1].str[:2]).all() and (parts[1].astype(int) == frame[schema.PATIENT_ID]).all()
        assert (official[dicom].map({"train": "train", "validate": "valid", "test": "test"}) == name).all()
        assert (images.loc[dicom, "ViewPosition"].to_numpy() == frame[schema.VIEW].to_numpy()).all()
        study_keys = list(zip(images.loc[dicom, "subject_id"], images.loc[dicom, "study_id"]))
        assert ((labels.loc[study_keys, "No Finding"] == 1.0).to_numpy() == (frame[schema.NO_FINDING] == 1.0)).all()
        sexes = patients.loc[frame[schema.PATIENT_ID], "gender"].map({"M": "Male", "F": "Female"})
        assert (sexes.to_numpy() == frame[schema.SEX].to_numpy()).all()
        study_year = images.loc[dicom, "StudyDate"].to_numpy() // 10000
        expected_age = (
            patients.loc[frame[schema.PATIENT_ID], "anchor_age"].to_numpy()
            + study_year
            - patients.loc[frame[schema.PATIENT_ID], "anchor_year"].to_numpy()
        )
        np.testing.assert_array_equal(frame[schema.AGE].to_numpy(), expected_age)
        np.testing.assert_array_equal(
            frame[list(schema.MIMIC_EHR_COLUMNS)].to_numpy(), ehr.loc[dicom, list(schema.MIMIC_EHR_COLUMNS)].to_numpy()
        )
    assert (outputs["train"][schema.NO_FINDING] == 1.0).all()
    assert outputs["test"][schema.BMI].isna().any() and outputs["test"][schema.BMI].notna().any()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["splits"]["valid"]["rows"] == len(outputs["valid"])
    assert summary["missing"][schema.BMI]["count"] == sum(
        int(frame[schema.BMI].isna().sum()) for frame in outputs.values()
    )
    assert set(summary["ehr"][schema.WEIGHT]) >= {"mean", "std", "median", "p05", "p95"}


def test_steps_run_separately_and_policies_apply(dataset, tmp_path):
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.main(["--mimic-cxr", str(mimic_cxr), "--mimic-iv", str(mimic_iv), "--work-dir", str(work)])
    step2_concatenate.main(["--work-dir", str(work)])
    step3_join.main(
        ["--mimic-cxr", str(mimic_cxr), "--mimic-iv", str(mimic_iv), "--work-dir", str(work), "--age", "anchor"]
    )
    joined = pd.read_csv(work / layout.JOINED)
    patients = _read(mimic_iv / "hosp" / f"{layout.PATIENTS}.csv.gz").set_index("subject_id")
    np.testing.assert_array_equal(joined[schema.AGE], patients.loc[joined[schema.PATIENT_ID], "anchor_age"])

    present = joined[schema.PATH].iloc[::2].tolist()
    _touch_images(mimic_cxr, present)
    step4_filter_existing.main(["--mimic-cxr", str(mimic_cxr), "--work-dir", str(work)])
    assert sorted(pd.read_csv(work / layout.EXISTING)[schema.PATH]) == sorted(present)

    summary = step5_summarise.run(
        work, tmp_path / "out", drop_support_devices=True, drop_incomplete_ehr=True, split="patient", seed=2
    )
    outputs = [pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in ("train", "valid", "test")]
    written = pd.concat(outputs)
    assert written[list(schema.MIMIC_EHR_COLUMNS)].notna().all().all()
    existing = pd.read_csv(work / layout.EXISTING).set_index(schema.PATH)
    assert (existing.loc[written[schema.PATH], "Support Devices"] == 0.0).all()
    patient_sets = [set(frame[schema.PATIENT_ID]) for frame in outputs]
    assert not (
        patient_sets[0] & patient_sets[1] or patient_sets[0] & patient_sets[2] or patient_sets[1] & patient_sets[2]
    )
    assert summary["pipeline"]["dropped_by_policies"] > 0 and summary["rows_with_missing_ehr"] == 0


def test_step2_trusts_only_a_finished_step1(dataset, tmp_path):
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    with pytest.raises(FileNotFoundError, match="manifest.json not found: step 1 has not finished"):
        step2_concatenate.run(work)
    manifest = step1_omr_ehr.run(mimic_cxr, mimic_iv, work, part_images=200)
    part = manifest.parent / "part-00001.csv"
    pd.read_csv(part).head(5).to_csv(part, index=False)
    with pytest.raises(InputTableError, match=r"part-00001\.csv: has 5 rows but .*manifest\.json records 200"):
        step2_concatenate.run(work)

    omr = mimic_iv / "hosp" / f"{layout.OMR}.csv.gz"
    pd.read_csv(omr).rename(columns={"chartdate": "charttime"}).to_csv(omr, index=False)
    with pytest.raises(MissingColumnError, match=r"omr\.csv\.gz: missing column\(s\) \['chartdate'\]"):
        step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    assert not list((work / layout.PARTS_DIR).iterdir()), "a failed rerun leaves no stale parts or manifest"
    with pytest.raises(FileNotFoundError, match="step 1 has not finished"):
        step2_concatenate.run(work)


def test_step3_validates_inputs_and_keeps_the_previous_output_on_failure(dataset, tmp_path):
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    step2_concatenate.run(work)
    joined = step3_join.run(mimic_cxr, mimic_iv, work)
    before = joined.read_bytes()

    patients_path = mimic_iv / "hosp" / f"{layout.PATIENTS}.csv.gz"
    patients = pd.read_csv(patients_path)
    patients.drop(columns="anchor_year").to_csv(patients_path, index=False)
    with pytest.raises(MissingColumnError, match=r"patients\.csv\.gz: missing column\(s\) \['anchor_year'\]"):
        step3_join.run(mimic_cxr, mimic_iv, work)
    patients.loc[0, "gender"] = "X"
    patients.to_csv(patients_path, index=False)
    with pytest.raises(InputTableError, match=r"patients\.csv\.gz: column 'gender', line 2: gender 'X' is not a sex"):
        step3_join.run(mimic_cxr, mimic_iv, work)
    assert joined.read_bytes() == before
    assert not [path for path in work.iterdir() if path.name.startswith(".")], "no temporary files left behind"

    patients.loc[0, "gender"] = "F"
    patients.to_csv(patients_path, index=False)
    ehr = pd.read_csv(work / layout.IMAGE_EHR)
    ehr.iloc[10:].to_csv(work / layout.IMAGE_EHR, index=False)
    with pytest.raises(InputTableError, match=r"image_ehr\.csv: column 'dicom_id' lacks \d+ images"):
        step3_join.run(mimic_cxr, mimic_iv, work)


def test_step4_refuses_a_root_without_images(dataset, tmp_path):
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    step2_concatenate.run(work)
    step3_join.run(mimic_cxr, mimic_iv, work)
    with pytest.raises(InputTableError, match="none of the .* images in column 'Path' exists"):
        step4_filter_existing.run(tmp_path, work)
    with pytest.raises(SystemExit, match="error: .*existing.csv not found"):
        step5_summarise.main(["--work-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])


def test_step5_policies_on_a_small_frame(tmp_path):
    """The authors keep rows whose five EHR values are all non-zero (0 = missing there) and keep support-device
    studies (``drop('Support Devices', axis=1)`` drops the column); dropping those studies is an extra option."""
    rows = [
        # name, split, support devices, BMI, systolic, diastolic, height, weight
        ("normal_train", "train", 0.0, 25.0, 120.0, 80.0, 65.0, 170.0),
        ("normal_valid", "valid", 0.0, 25.0, 120.0, 80.0, 65.0, 170.0),
        ("complete", "test", 0.0, 25.0, 120.0, 80.0, 65.0, 170.0),
        ("devices", "test", 1.0, 24.0, 110.0, 70.0, 66.0, 160.0),
        ("missing", "test", 0.0, np.nan, 120.0, 80.0, 65.0, 170.0),
        ("zero", "test", 0.0, 25.0, 0.0, 80.0, 65.0, 170.0),
    ]
    frame = pd.DataFrame(
        {
            schema.PATH: [f"files/p10/p1000000{i}/s1/{row[0]}.jpg" for i, row in enumerate(rows)],
            schema.PATIENT_ID: [10000000 + i for i in range(len(rows))],
            schema.SEX: "Female",
            schema.AGE: 50.0,
            schema.FRONTAL_LATERAL: "Frontal",
            schema.VIEW: "PA",
            schema.NO_FINDING: 1.0,
            SUPPORT_DEVICES: [row[2] for row in rows],
            SPLIT: [row[1] for row in rows],
            **{column: [row[3 + k] for row in rows] for k, column in enumerate(schema.MIMIC_EHR_COLUMNS)},
        }
    )[list(JOINED_COLUMNS)]
    work = tmp_path / "work"
    work.mkdir()
    frame.to_csv(work / layout.EXISTING, index=False)
    assert step5_summarise.incomplete_ehr(frame).tolist() == [False, False, False, False, True, True]

    def kept(**policies) -> list[str]:
        step5_summarise.run(work, tmp_path / "out", **policies)
        return [Path(path).stem for path in pd.read_csv(tmp_path / "out" / "test.csv")[schema.PATH]]

    assert kept() == ["complete", "devices", "missing", "zero"]
    assert kept(drop_incomplete_ehr=True) == ["complete", "devices"]  # the authors' make_mimic_1_5_dataset
    assert kept(drop_incomplete_ehr=True, drop_support_devices=True) == ["complete"]
    assert SUPPORT_DEVICES not in pd.read_csv(tmp_path / "out" / "test.csv").columns


@pytest.mark.parametrize(
    "table, key", [(f"{layout.PATIENTS}.csv.gz", "subject_id"), (f"{layout.SPLIT_TABLE}.csv.gz", "dicom_id")]
)
def test_a_key_listed_twice_is_kept_once_when_identical_and_a_named_error_when_not(
    dataset, tmp_path, capsys, table, key
):
    """A subject twice in ``patients`` duplicated its images with two EHRs and the log said "dropped -3"."""
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    step2_concatenate.run(work)
    joined = step3_join.run(mimic_cxr, mimic_iv, work)
    reference = _read(joined)
    path = (mimic_iv / "hosp" if table.startswith(layout.PATIENTS) else mimic_cxr) / table
    rows = pd.read_csv(path, dtype={"dicom_id": str})
    used = (
        int(reference[schema.PATIENT_ID].iloc[0]) if key == "subject_id" else Path(reference[schema.PATH].iloc[0]).stem
    )
    first = int(rows.index[rows[key] == used][0])

    pd.concat([rows, rows.loc[[first]]]).to_csv(path, index=False)
    capsys.readouterr()
    step3_join.run(mimic_cxr, mimic_iv, work)
    log = capsys.readouterr().err
    pd.testing.assert_frame_equal(_read(joined), reference)
    assert f"{table}: 1 row repeats an earlier row exactly (e.g. {key} {used!r}: line {first + 2} and line " in log
    assert "dropped -" not in log

    changed = rows.loc[[first]].copy()
    if key == "subject_id":
        changed["anchor_age"] += 7
    else:
        changed["split"] = "test" if changed["split"].item() != "test" else "train"
    pd.concat([rows, changed]).to_csv(path, index=False)
    with pytest.raises(
        InputTableError,
        match=rf"{table}: {key} {used!r} is on two rows that differ, line {first + 2} \(.*\) and "
        rf"line {len(rows) + 2} \(.*\); give it one row",
    ):
        step3_join.run(mimic_cxr, mimic_iv, work)
    assert _read(joined).equals(reference), "the previous output is kept"


def test_views_and_genders_in_any_spelling_the_bundle_reads_give_the_same_rows(dataset, tmp_path):
    """``pa``, ``AP PORTABLE`` and gender ``f`` were dropped as not frontal or refused; the bundle reads them."""
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    step2_concatenate.run(work)
    joined = step3_join.run(mimic_cxr, mimic_iv, work)
    reference = _read(joined)
    metadata_path = mimic_cxr / f"{layout.METADATA}.csv.gz"
    metadata = pd.read_csv(metadata_path, dtype={"dicom_id": str})
    metadata["ViewPosition"] = metadata["ViewPosition"].replace({"PA": "pa", "AP": "AP PORTABLE"})
    metadata.to_csv(metadata_path, index=False)
    patients_path = mimic_iv / "hosp" / f"{layout.PATIENTS}.csv.gz"
    patients = pd.read_csv(patients_path)
    patients["gender"] = patients["gender"].str.lower()
    patients.to_csv(patients_path, index=False)

    step3_join.run(mimic_cxr, mimic_iv, work)

    pd.testing.assert_frame_equal(_read(joined), reference)


def test_a_join_that_leaves_no_image_is_a_named_error_not_an_empty_table(dataset, tmp_path):
    mimic_cxr, mimic_iv = dataset
    work = tmp_path / "work"
    step1_omr_ehr.run(mimic_cxr, mimic_iv, work)
    step2_concatenate.run(work)
    patients_path = mimic_iv / "hosp" / f"{layout.PATIENTS}.csv.gz"
    patients = pd.read_csv(patients_path)
    patients.assign(subject_id=patients["subject_id"] + 1).to_csv(patients_path, index=False)

    with pytest.raises(
        InputTableError, match=r"no frontal AP/PA image of .*metadata.* is left after joining .*patients"
    ):
        step3_join.run(mimic_cxr, mimic_iv, work)
    assert not (work / layout.JOINED).exists()
