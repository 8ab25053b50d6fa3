"""Step 1 of the MIMIC pipeline: the nearest ``omr`` record within ±90 days, on hand-made tables with real schemas."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.preprocessing.common import InputTableError, MissingColumnError
from monai_diff3m.preprocessing.mimic import layout, step1_omr_ehr

STUDY = date(2180, 6, 15)
OMR_COLUMNS = ["subject_id", "chartdate", "seq_num", "result_name", "result_value"]
METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
]


def _chartdate(offset_days: int) -> str:
    return (STUDY + timedelta(days=offset_days)).isoformat()


def _metadata(rows: list[tuple[str, int, date]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            [
                dicom,
                subject,
                50_000_000 + index,
                "CHEST (PA AND LAT)",
                "PA",
                3056,
                2544,
                int(study.strftime("%Y%m%d")),
                101010.5,
            ]
            for index, (dicom, subject, study) in enumerate(rows)
        ],
        columns=METADATA_COLUMNS,
    )


def _omr(rows: list[tuple[int, int, str, str]]) -> pd.DataFrame:
    """Rows of (subject, day offset from STUDY, result_name, result_value)."""
    return pd.DataFrame(
        [[subject, _chartdate(offset), 1, name, value] for subject, offset, name, value in rows], columns=OMR_COLUMNS
    )


def _write(tmp_path: Path, metadata: pd.DataFrame, omr: pd.DataFrame, suffix: str = ".csv.gz") -> tuple[Path, Path]:
    mimic_cxr, hosp = tmp_path / "cxr", tmp_path / "iv" / "hosp"
    mimic_cxr.mkdir(parents=True, exist_ok=True)
    hosp.mkdir(parents=True, exist_ok=True)
    metadata.to_csv(mimic_cxr / f"{layout.METADATA}{suffix}", index=False)
    omr.to_csv(hosp / f"{layout.OMR}{suffix}", index=False)
    return mimic_cxr, tmp_path / "iv"


def _ehr(tmp_path: Path, metadata: pd.DataFrame, omr: pd.DataFrame, **options) -> pd.DataFrame:
    """Run step 1 and return its parts concatenated, indexed by dicom_id."""
    mimic_cxr, mimic_iv = _write(tmp_path, metadata, omr)
    manifest = json.loads(step1_omr_ehr.run(mimic_cxr, mimic_iv, tmp_path / "work", **options).read_text())
    parts = [
        pd.read_csv(tmp_path / "work" / layout.PARTS_DIR / part["file"], dtype={"dicom_id": str})
        for part in manifest["parts"]
    ]
    return pd.concat(parts).set_index("dicom_id")


def test_nearest_record_within_window_ties_and_units(tmp_path):
    metadata = _metadata([("a", 10000001, STUDY), ("b", 10000002, STUDY), ("c", 10000003, STUDY)])
    omr = _omr(
        [
            # a: nearest BMI is 5 days after (not 20 before); weight tie on one day averaged; height in inches kept
            (10000001, -20, "BMI (kg/m2)", "30.0"),
            (10000001, 5, "BMI (kg/m2)", "25.5"),
            (10000001, 200, "BMI (kg/m2)", "40.0"),
            (10000001, -3, "Weight (Lbs)", "180"),
            (10000001, -3, "Weight (Lbs)", "190"),
            (10000001, 0, "Height (Inches)", "65"),
            (10000001, 1, "Blood Pressure", "120/80"),
            (10000001, 0, "Blood Pressure Sitting", "200/100"),
            (10000001, 0, "Weight", "999"),
            # b: equidistant records before and after are averaged; 90 days is inside, 91 outside the window
            (10000002, -10, "Blood Pressure", "110/70"),
            (10000002, 10, "Blood Pressure", "130/90"),
            (10000002, 90, "BMI (kg/m2)", "22.0"),
            (10000002, -91, "Weight (Lbs)", "150"),
            (10000002, 91, "Height (Inches)", "70"),
            # subject without images: ignored
            (19999999, 0, "BMI (kg/m2)", "50.0"),
        ]
    )
    ehr = _ehr(tmp_path, metadata, omr)

    assert ehr.loc["a", schema.BMI] == pytest.approx(25.5)
    assert ehr.loc["a", schema.WEIGHT] == pytest.approx(185.0)
    assert ehr.loc["a", schema.HEIGHT] == pytest.approx(65.0)
    assert ehr.loc["a", schema.SYSTOLIC] == pytest.approx(120.0)
    assert ehr.loc["a", schema.DIASTOLIC] == pytest.approx(80.0)
    assert ehr.loc["b", schema.SYSTOLIC] == pytest.approx(120.0)
    assert ehr.loc["b", schema.DIASTOLIC] == pytest.approx(80.0)
    assert ehr.loc["b", schema.BMI] == pytest.approx(22.0)
    assert np.isnan(ehr.loc["b", schema.WEIGHT]) and np.isnan(ehr.loc["b", schema.HEIGHT])
    assert ehr.loc["c"].isna().all(), "a subject without omr records keeps every feature missing (not 0)"


def test_positional_blood_pressure_and_bad_values_are_ignored(tmp_path):
    metadata = _metadata([("a", 10000001, STUDY)])
    omr = _omr(
        [
            (10000001, 0, "Blood Pressure Sitting", "200/100"),
            (10000001, 0, "Blood Pressure Standing (1 min)", "190/95"),
            (10000001, 2, "Blood Pressure", "not measured"),
            (10000001, 30, "Blood Pressure", "118/76"),
            (10000001, 0, "BMI (kg/m2)", "n/a"),
        ]
    )
    ehr = _ehr(tmp_path, metadata, omr)
    assert ehr.loc["a", schema.SYSTOLIC] == pytest.approx(118.0)
    assert ehr.loc["a", schema.DIASTOLIC] == pytest.approx(76.0)
    assert np.isnan(ehr.loc["a", schema.BMI])


def test_substring_matching_adds_the_unit_less_names_as_the_authors_code(tmp_path):
    """The authors test ``row[3] in result_name``: "Weight" is in "Weight (Lbs)", "Blood Pressure Sitting" is not in
    "Blood Pressure"."""
    metadata = _metadata([("a", 10000001, STUDY)])
    omr = _omr(
        [
            (10000001, 0, "Weight", "200"),
            (10000001, 0, "Weight (Lbs)", "180"),
            (10000001, 3, "BMI", "31"),
            (10000001, 5, "BMI (kg/m2)", "25"),
            (10000001, -2, "Height", "66"),
            (10000001, 0, "Blood Pressure Sitting", "200/100"),
            (10000001, 1, "Blood Pressure", "120/80"),
            (10000001, 0, "eGFR", "90"),
        ]
    )
    exact = _ehr(tmp_path / "exact", metadata, omr)
    substring = _ehr(tmp_path / "substring", metadata, omr, omr_names="substring")
    assert exact.loc["a", schema.WEIGHT] == 180.0 and exact.loc["a", schema.BMI] == 25.0
    assert np.isnan(exact.loc["a", schema.HEIGHT])
    assert substring.loc["a", schema.WEIGHT] == pytest.approx(190.0)  # both names on the study day, averaged
    assert substring.loc["a", schema.BMI] == 31.0  # the unit-less record is nearer
    assert substring.loc["a", schema.HEIGHT] == 66.0
    assert (substring.loc["a", schema.SYSTOLIC], substring.loc["a", schema.DIASTOLIC]) == (120.0, 80.0)
    assert step1_omr_ehr.feature_aliases(["BMI", "BMI (kg/m2)", "Blood Pressure Sitting", "eGFR"], "substring") == {
        "BMI (kg/m2)": {"BMI", "BMI (kg/m2)"},
        "Blood Pressure": set(),
        "Height (Inches)": set(),
        "Weight (Lbs)": set(),
    }
    with pytest.raises(ValueError, match="omr name matching"):
        step1_omr_ehr.feature_aliases([], "prefix")


def test_chunked_reading_and_parts_match_a_single_pass(tmp_path):
    rng = np.random.default_rng(3)
    subjects = 10_000_000 + np.arange(40)
    studies = [STUDY + timedelta(days=int(offset)) for offset in rng.integers(-300, 300, 120)]
    metadata = _metadata([(f"d{index:03d}", int(subjects[index % 40]), study) for index, study in enumerate(studies)])
    names = rng.choice(["BMI (kg/m2)", "Weight (Lbs)", "Height (Inches)", "Blood Pressure", "eGFR"], 3000)
    values = [
        f"{rng.integers(90, 160)}/{rng.integers(50, 100)}"
        if name == "Blood Pressure"
        else f"{rng.uniform(20, 200):.1f}"
        for name in names
    ]
    omr = _omr(
        [(int(rng.choice(subjects)), int(rng.integers(-400, 400)), name, value) for name, value in zip(names, values)]
    )
    single = _ehr(tmp_path / "single", metadata, omr)
    chunked = _ehr(tmp_path / "chunked", metadata, omr, chunk_rows=97, part_images=7)
    pd.testing.assert_frame_equal(single.sort_index(), chunked.sort_index())
    assert single[schema.BMI].notna().sum() > 30


def test_window_option_and_uncompressed_tables(tmp_path):
    metadata = _metadata([("a", 10000001, STUDY)])
    omr = _omr([(10000001, 40, "Weight (Lbs)", "170")])
    mimic_cxr, mimic_iv = _write(tmp_path, metadata, omr, suffix=".csv")
    manifest_path = step1_omr_ehr.run(mimic_cxr, mimic_iv / "hosp", tmp_path / "work", window_days=30)
    part = pd.read_csv(manifest_path.parent / json.loads(manifest_path.read_text())["parts"][0]["file"])
    assert np.isnan(part.loc[0, schema.WEIGHT])


def test_missing_column_names_file_and_column(tmp_path):
    metadata = _metadata([("a", 10000001, STUDY)])
    omr = _omr([(10000001, 0, "BMI (kg/m2)", "25")]).drop(columns="result_value")
    mimic_cxr, mimic_iv = _write(tmp_path, metadata, omr)
    with pytest.raises(MissingColumnError, match=r"omr\.csv\.gz.*'result_value'"):
        step1_omr_ehr.run(mimic_cxr, mimic_iv, tmp_path / "work")
    assert not (tmp_path / "work" / layout.PARTS_DIR / layout.MANIFEST).exists()


def test_bad_ids_and_dates_name_file_column_and_line(tmp_path):
    metadata = _metadata([("a", 10000001, STUDY), ("b", 10000002, STUDY)])
    omr = _omr([(10000001, 0, "BMI (kg/m2)", "25"), (10000002, 0, "BMI (kg/m2)", "26")])
    omr.loc[1, "chartdate"] = "2180-13-45"
    mimic_cxr, mimic_iv = _write(tmp_path, metadata, omr)
    with pytest.raises(InputTableError, match=r"omr\.csv\.gz: column 'chartdate'.*line 3 has '2180-13-45'"):
        step1_omr_ehr.run(mimic_cxr, mimic_iv, tmp_path / "work")

    metadata[layout.SUBJECT_ID] = metadata[layout.SUBJECT_ID].astype(str)
    metadata.loc[0, layout.SUBJECT_ID] = "p10000001"
    mimic_cxr, mimic_iv = _write(tmp_path, metadata, omr)
    with pytest.raises(InputTableError, match=r"metadata\.csv\.gz: column 'subject_id' must hold integer IDs; line 2"):
        step1_omr_ehr.run(mimic_cxr, mimic_iv, tmp_path / "work")


def test_missing_table_lists_the_paths_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\.gz"):
        step1_omr_ehr.run(tmp_path / "nowhere", tmp_path / "nowhere", tmp_path / "work")


def test_values_that_are_not_numbers_are_counted_per_feature_with_an_example_line(tmp_path, capsys):
    """They were left out with one total in the log; now each feature's count, one value and its line are logged
    and recorded in the manifest. Values of subjects without images are never used, so never counted."""
    metadata = _metadata([("a", 10000001, STUDY)])
    omr = _omr(
        [
            (10000001, 0, "BMI (kg/m2)", "25.0"),
            (10000001, 1, "BMI (kg/m2)", "n/a"),
            (10000001, 2, "BMI (kg/m2)", "high"),
            (10000001, 3, "Blood Pressure", "120/eighty"),
            (10000001, 4, "Weight (Lbs)", "180"),
            (19999999, 0, "Height (Inches)", "tall"),
        ]
    )
    ehr = _ehr(tmp_path, metadata, omr, chunk_rows=2)

    log = capsys.readouterr().err
    assert "step1: omr.csv.gz: 2 'BMI (kg/m2)' values are not numbers, left out (missing); e.g. line 3: 'n/a'" in log
    assert "1 'Blood Pressure' values are not numbers ('systolic/diastolic'), left out (missing); e.g. line 5:" in log
    assert "'Weight (Lbs)' values" not in log and "'Height (Inches)' values" not in log
    manifest = json.loads((tmp_path / "work" / layout.PARTS_DIR / layout.MANIFEST).read_text())
    assert manifest["omr_values_not_numbers"] == {"BMI (kg/m2)": 2, "Blood Pressure": 1}
    assert ehr.loc["a", schema.BMI] == pytest.approx(25.0) and np.isnan(ehr.loc["a", schema.SYSTOLIC])
