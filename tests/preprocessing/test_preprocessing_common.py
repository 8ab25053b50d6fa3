"""Shared preprocessing pieces: table validation, label policies, patient-level splits, summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.preprocessing.common import (
    InputTableError,
    MissingColumnError,
    day_numbers,
    integer_ids,
    read_table,
    resolve_table,
)
from monai_diff3m.preprocessing.labels import (
    FINDINGS,
    LABEL_COLUMNS,
    SUPPORT_DEVICES,
    has_support_devices,
    normal_label,
)
from monai_diff3m.preprocessing.splits import SPLIT, TEST, TRAIN, VALID, patient_split, split_frames, write_splits
from monai_diff3m.preprocessing.summary import format_summary, summarise


def test_resolve_table_prefers_gzip_and_accepts_plain_csv(tmp_path):
    (tmp_path / "omr.csv").write_text("a\n1\n")
    assert resolve_table([tmp_path / "hosp", tmp_path], "omr") == tmp_path / "omr.csv"
    (tmp_path / "omr.csv.gz").write_bytes(b"")
    assert resolve_table([tmp_path], "omr") == tmp_path / "omr.csv.gz"
    with pytest.raises(FileNotFoundError, match="patients.csv.gz.*patients.csv"):
        resolve_table([tmp_path], "patients")


def test_read_table_reads_only_the_requested_columns_and_names_missing_ones(tmp_path):
    path = tmp_path / "patients.csv"
    pd.DataFrame({"subject_id": [1, 2], "gender": ["M", "F"], "dod": [None, None]}).to_csv(path, index=False)
    table = read_table(path, ("subject_id", "gender"), integer_columns=("subject_id",))
    assert list(table.columns) == ["subject_id", "gender"]
    assert table["subject_id"].dtype == np.int64
    with pytest.raises(MissingColumnError, match=r"patients\.csv: missing column\(s\) \['anchor_age'\]"):
        read_table(path, ("subject_id", "anchor_age"))
    path.write_text("subject_id,gender\n")
    with pytest.raises(InputTableError, match="patients.csv has a header but no rows"):
        read_table(path, ("subject_id",))
    path.write_text("")
    with pytest.raises(InputTableError, match="patients.csv is empty"):
        read_table(path, ("subject_id",))


def test_integer_ids_accept_integral_floats_and_name_the_bad_line():
    assert integer_ids(pd.Series([1.0, 2.0]), "t.csv", "subject_id").tolist() == [1, 2]
    with pytest.raises(InputTableError, match=r"t\.csv: column 'subject_id' must hold integer IDs; line 3 has 2\.5"):
        integer_ids(pd.Series([1.0, 2.5]), "t.csv", "subject_id")
    with pytest.raises(InputTableError, match="line 4 has nan"):
        integer_ids(pd.Series([1.0, 2.0, np.nan]), "t.csv", "subject_id")


def test_day_numbers_parse_both_mimic_formats_and_reject_bad_dates():
    days = day_numbers(pd.Series([21800615, 21800616]), "%Y%m%d", "m.csv", "StudyDate")
    assert days.dtype == np.int32 and days[1] - days[0] == 1
    assert day_numbers(pd.Series(["1970-01-11"]), "%Y-%m-%d", "omr.csv", "chartdate").tolist() == [10]
    with pytest.raises(InputTableError, match=r"m\.csv: column 'StudyDate' must hold dates.*line 2 has 21801301"):
        day_numbers(pd.Series([21801301]), "%Y%m%d", "m.csv", "StudyDate")


def _labels(rows: list[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{column: row.get(column, np.nan) for column in LABEL_COLUMNS} for row in rows])


def test_uncertain_policies():
    labels = _labels(
        [
            {schema.NO_FINDING: 1.0},
            {schema.NO_FINDING: 1.0, SUPPORT_DEVICES: 1.0},
            {"Edema": 1.0, "Atelectasis": -1.0},
            {"Edema": -1.0, "Cardiomegaly": 0.0},
            {schema.NO_FINDING: -1.0},
            {"Fracture": 0.0},
        ]
    )
    expected = {
        "abnormal": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        "normal": [1.0, 1.0, 0.0, 1.0, 1.0, 0.0],
        "exclude": [1.0, 1.0, 0.0, np.nan, np.nan, 0.0],
    }
    for policy, values in expected.items():
        np.testing.assert_array_equal(normal_label(labels, policy, "l.csv").to_numpy(), values, err_msg=policy)
    assert has_support_devices(labels).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="policy"):
        normal_label(labels, "ignore", "l.csv")


def test_label_values_other_than_labeler_output_are_rejected():
    labels = _labels([{FINDINGS[0]: 2.0}])
    with pytest.raises(InputTableError, match=rf"l\.csv: column '{FINDINGS[0]}' must hold 1, 0, -1 or blank"):
        normal_label(labels, "abnormal", "l.csv")


def test_patient_split_has_no_leakage_and_is_seeded():
    patients = pd.Series(np.repeat(np.arange(200), 3)).sample(frac=1.0, random_state=1)
    split = patient_split(patients, 0.1, 0.2, seed=7)
    assert (pd.DataFrame({"p": patients, "s": split}).groupby("p")["s"].nunique() == 1).all()
    per_patient = split.groupby(patients).first().value_counts()
    assert per_patient.to_dict() == {TRAIN: 140, TEST: 40, VALID: 20}
    assert split.equals(patient_split(patients, 0.1, 0.2, seed=7))
    assert not split.equals(patient_split(patients, 0.1, 0.2, seed=8))
    reordered = patient_split(patients.sort_values(), 0.1, 0.2, seed=7)
    assert reordered.reindex(split.index).equals(split)
    with pytest.raises(ValueError, match="fractions"):
        patient_split(patients, 0.5, 0.5, seed=0)


def _rows(split_names: list[str], normals: list[float]) -> pd.DataFrame:
    count = len(split_names)
    return pd.DataFrame(
        {
            schema.PATH: [f"img{index}.jpg" for index in range(count)],
            schema.PATIENT_ID: list(range(count)),
            schema.SEX: [schema.SEX_VALUES[index % 2] for index in range(count)],
            schema.AGE: [50.0] * count,
            schema.FRONTAL_LATERAL: [schema.FRONTAL] * count,
            schema.VIEW: [schema.VIEW_VALUES[index % 2] for index in range(count)],
            schema.NO_FINDING: normals,
            schema.BMI: [25.0, np.nan] * (count // 2),
            SPLIT: split_names,
        }
    )


def test_split_frames_keep_normals_for_training_and_write_atomically(tmp_path):
    frame = _rows([TRAIN, TRAIN, VALID, VALID, TEST, TEST], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    parts = split_frames(frame)
    assert parts[TRAIN][schema.PATH].tolist() == ["img0.jpg"]
    assert len(parts[VALID]) == 2 and len(parts[TEST]) == 2
    written = write_splits(parts, tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["test.csv", "train.csv", "valid.csv"]
    assert SPLIT not in pd.read_csv(written[VALID]).columns
    with pytest.raises(ValueError, match=r"\['train'\] would be empty"):
        split_frames(_rows([TRAIN, TRAIN, VALID, TEST], [0.0, 0.0, 1.0, 1.0]))


def test_summary_counts_and_ehr_distribution():
    frame = _rows([TRAIN, TRAIN, VALID, VALID, TEST, TEST], [1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    summary = summarise(split_frames(frame), (schema.BMI,), extra={"rows_read": 6})
    assert summary["pipeline"] == {"rows_read": 6}
    assert summary["splits"][VALID] == {
        "rows": 2,
        "patients": 2,
        "normal": 1,
        "abnormal": 1,
        "sex": {"Male": 1, "Female": 1},
        "view": {"AP": 1, "PA": 1},
    }
    assert summary["missing"][schema.BMI] == {"count": 3, "fraction": 0.5}
    assert summary["ehr"][schema.BMI]["mean"] == 25.0 and summary["ehr"][schema.BMI]["count"] == 3
    assert "rows with any missing EHR: 3" in format_summary(summary)
