"""DICOM tags -> EHR records, and folder scans that report bad files without stopping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_diff3m.data.dicom import (
    DicomTagError,
    parse_dicom_age,
    parse_dicom_sex,
    parse_view_position,
    read_dicom_record,
    scan_dicom_folder,
    scan_image_folder,
)
from monai_diff3m.data.schema import AGE, FRONTAL, FRONTAL_LATERAL, PATH, SEX, SEX_VALUES, VIEW
from monai_diff3m.transforms.image import ImageLoadError

from dicom_files import write_dicom


@pytest.mark.parametrize(
    "value, years",
    [
        ("067Y", 67.0),
        ("034M", 34 / 12),
        ("010W", 70 / 365.25),
        ("005D", 5 / 365.25),
        ("67", 67.0),
        (" 067y ", 67.0),
        ("120Y", 120.0),
        ("", None),
        (None, None),
    ],
)
def test_parse_dicom_age(value, years):
    assert parse_dicom_age(value) == (None if years is None else pytest.approx(years))


@pytest.mark.parametrize("value", ["abc", "-5Y", "200Y", "1234Y", "67X", "Y", "6 7Y", "67.5"])
def test_parse_dicom_age_malformed_names_tag_value_and_format(value):
    with pytest.raises(DicomTagError, match=rf"PatientAge {value!r}.*nnnY"):
        parse_dicom_age(value)


@pytest.mark.parametrize(
    "value, sex", [("M", SEX_VALUES[0]), (" f ", SEX_VALUES[1]), ("O", None), ("", None), (None, None)]
)
def test_parse_dicom_sex(value, sex):
    assert parse_dicom_sex(value) == sex


def test_parse_dicom_sex_unknown_code():
    with pytest.raises(DicomTagError, match=r"PatientSex 'X'.*'M', 'F', 'O'"):
        parse_dicom_sex("X")


@pytest.mark.parametrize("value, view", [("AP", "AP"), (" pa ", "PA"), ("", None), (None, None)])
def test_parse_view_position(value, view):
    assert parse_view_position(value) == view


@pytest.mark.parametrize("value", ["LL", "rl", "LAT", "LATERAL", "LLD", "RLD"])
def test_parse_view_position_rejects_lateral(value):
    with pytest.raises(DicomTagError, match=r"lateral views are not supported"):
        parse_view_position(value)


def test_parse_view_position_rejects_unknown():
    with pytest.raises(DicomTagError, match=r"ViewPosition 'OBL'.*\('AP', 'PA'\)"):
        parse_view_position("OBL")


def test_read_dicom_record_maps_tags_to_schema(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", PatientSex="F", PatientAge="034M", ViewPosition="PA")
    record = read_dicom_record(path)
    assert record == {PATH: str(path), SEX: "Female", AGE: pytest.approx(34 / 12), VIEW: "PA", FRONTAL_LATERAL: FRONTAL}


def test_read_dicom_record_missing_tags_are_none(tmp_path):
    record = read_dicom_record(write_dicom(tmp_path / "bare.dcm"))
    assert (record[SEX], record[AGE], record[VIEW]) == (None, None, None)


def test_read_dicom_record_errors_name_the_file(tmp_path):
    lateral = write_dicom(tmp_path / "lat.dcm", ViewPosition="LL")
    report = write_dicom(tmp_path / "report.dcm", image=False, PatientSex="M")
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom")
    with pytest.raises(DicomTagError, match=r"lat\.dcm.*lateral"):
        read_dicom_record(lateral)
    with pytest.raises(ImageLoadError, match=r"report\.dcm.*not an image"):
        read_dicom_record(report)
    with pytest.raises(ImageLoadError, match=r"notes\.dcm"):
        read_dicom_record(text)


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # the fixtures are deliberately off-spec
def test_scan_dicom_folder_reports_bad_files_and_keeps_the_rest(tmp_path):
    good = write_dicom(tmp_path / "p1" / "s1" / "a.dcm", PatientSex="M", PatientAge="067Y", ViewPosition="AP")
    no_suffix = write_dicom(tmp_path / "p2" / "IM0001", PatientAge="45")
    bad_age = write_dicom(tmp_path / "p2" / "b.dcm", PatientAge="abc")
    corrupt = tmp_path / "p3" / "c.dcm"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00\x01garbage")
    (tmp_path / "p3" / "readme.txt").write_text("ignored: neither .dcm nor DICM preamble")

    records, failures = scan_dicom_folder(tmp_path)

    assert [r[PATH] for r in records] == [str(good), str(no_suffix)]
    assert (records[0][SEX], records[0][AGE], records[0][VIEW]) == ("Male", 67.0, "AP")
    assert records[1][AGE] == 45.0
    assert [path for path, _ in failures] == [str(bad_age), str(corrupt)]
    assert "PatientAge 'abc'" in failures[0][1] and "c.dcm" in failures[1][1]


def test_scan_dicom_folder_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        scan_dicom_folder(tmp_path / "absent")


def test_scan_image_folder_joins_csv_and_reports_both_sides(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.jpg", "orphan.png", "lateral.png", "old.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / name)
    dicom = write_dicom(images / "sub" / "c.dcm")
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {
            PATH: ["a.png", "sub/b.jpg", "c.dcm", "ghost.png", "lateral.png", "old.png", "b.jpg"],
            SEX: ["Male", None, "Female", "Male", "Male", "Female", "Male"],
            AGE: [67, None, 30, 50, 40, 150, 20],
            VIEW: ["AP", "PA", None, "AP", "LL", "AP", "AP"],
            "BMI": [24.5, None, None, None, None, None, None],
        }
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(images, csv)

    assert records == [
        {PATH: str(images / "a.png"), SEX: "Male", AGE: 67.0, VIEW: "AP", "BMI": 24.5},
        {PATH: str(images / "sub" / "b.jpg"), SEX: None, AGE: None, VIEW: "PA", "BMI": None},
        {PATH: str(dicom), SEX: "Female", AGE: 30.0, VIEW: None, "BMI": None},
    ]
    assert [path for path, _ in failures] == [
        str(images / "ghost.png"),
        str(images / "lateral.png"),
        str(images / "old.png"),
        str(images / "sub" / "b.jpg"),
        str(images / "orphan.png"),
    ]
    reasons = [reason for _, reason in failures]
    assert all(str(csv) in reason for reason in reasons)
    assert "row 5" in reasons[0] and "'ghost.png'" in reasons[0]
    assert "row 6" in reasons[1] and "'LL'" in reasons[1]
    assert "row 7" in reasons[2] and "150" in reasons[2]
    assert "row 8" in reasons[3] and "already names" in reasons[3]
    assert "no row" in reasons[4]


def test_scan_image_folder_missing_columns_named(tmp_path):
    csv = tmp_path / "ehr.csv"
    pd.DataFrame({PATH: ["a.png"], SEX: ["Male"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=rf"ehr\.csv.*\['{AGE}', '{VIEW}'\]"):
        scan_image_folder(tmp_path, csv)
