"""DICOM tags -> EHR records, and folder scans that report bad files without stopping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.data.dicom import (
    DicomTagError,
    parse_dicom_age,
    parse_dicom_sex,
    parse_view_position,
    read_dicom_record,
    scan_dicom_folder,
)
from monai_diff3m.data.image_folder import scan_image_folder
from monai_diff3m.data.input_files import OUTPUT_FOLDER_MARKER
from monai_diff3m.schema import AGE, FRONTAL, FRONTAL_LATERAL, PATH, SEX, SEX_VALUES, VIEW
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
    with pytest.raises(DicomTagError, match=r"PatientSex 'X' is not a sex: expected Male/M or Female/F"):
        parse_dicom_sex("X")


@pytest.mark.parametrize(
    "value, view", [("AP", "AP"), (" pa ", "PA"), ("AP SUPINE", "AP"), ("PA_ERECT", "PA"), ("", None), (None, None)]
)
def test_parse_view_position(value, view):
    assert parse_view_position(value) == view


@pytest.mark.parametrize("value", ["LL", "rl", "LAT", "LATERAL", "LLD", "RLD", "AP LLD"])
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


def test_a_field_with_a_dicom_tag_in_the_table_is_read_from_the_header(tmp_path, monkeypatch):
    """The DICOM reader takes every tagged field of ``schema.EHR_FIELDS``: a number, and a category by its table."""
    weight = schema.EHRField("Weight (kg)", "body", plausible_range=(0.5, 700.0), unit="kg", dicom_tag="PatientWeight")
    smoker = schema.EHRField(
        "Smoker", "body", categories=("Yes", "No"), spellings={"Y": "Yes", "N": "No"},
        missing_spellings=("UNKNOWN",), dicom_tag="SmokingStatus",
    )  # fmt: skip
    monkeypatch.setattr(schema, "EHR_FIELDS", (*schema.EHR_FIELDS, weight, smoker))
    record = read_dicom_record(write_dicom(tmp_path / "a.dcm", PatientWeight="71.5", SmokingStatus="YES"))
    assert (record["Weight (kg)"], record["Smoker"]) == (71.5, "Yes")
    record = read_dicom_record(write_dicom(tmp_path / "b.dcm", SmokingStatus="UNKNOWN"))
    assert (record["Weight (kg)"], record["Smoker"]) == (None, None)
    with pytest.raises(DicomTagError, match=r"SmokingStatus 'MAYBE' is not a smoker: expected Yes/Y or No/N"):
        read_dicom_record(write_dicom(tmp_path / "c.dcm", SmokingStatus="MAYBE"))


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
    readme = tmp_path / "p3" / "readme.txt"
    readme.write_text("neither .dcm nor DICM preamble nor a DICOM data set")
    (tmp_path / "p3" / ".DS_Store").write_bytes(b"hidden system file")

    records, failures = scan_dicom_folder(tmp_path)

    assert [r[PATH] for r in records] == [str(good), str(no_suffix)]
    assert (records[0][SEX], records[0][AGE], records[0][VIEW]) == ("Male", 67.0, "AP")
    assert records[1][AGE] == 45.0
    assert [path for path, _ in failures] == [str(bad_age), str(corrupt), str(readme)]
    assert "PatientAge 'abc'" in failures[0][1] and "c.dcm" in failures[1][1] and "not DICOM" in failures[2][1]


def test_scan_dicom_folder_reads_a_bare_dicom_without_suffix_or_preamble(tmp_path):
    """A data set written without preamble, ``DICM`` prefix and suffix was skipped silently: now it is read."""
    bare = write_dicom(tmp_path / "export" / "IM0002", bare=True, PatientSex="F", PatientAge="052Y", ViewPosition="PA")
    assert bare.read_bytes()[128:132] != b"DICM"

    records, failures = scan_dicom_folder(tmp_path)

    assert failures == []
    assert records == [{PATH: str(bare), SEX: "Female", AGE: 52.0, VIEW: "PA", FRONTAL_LATERAL: FRONTAL}]


def test_scans_skip_the_output_folder_and_marked_output_folders(tmp_path):
    """An output folder inside the input folder is never read back as input (its overlays are PNGs)."""
    write_dicom(tmp_path / "in" / "a.dcm")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "in" / "x.png")
    for output in ("out_now", "out_before"):
        (tmp_path / "in" / output / "overlays").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "in" / output / "overlays" / "a.png")
    (tmp_path / "in" / "out_before" / OUTPUT_FOLDER_MARKER).touch()
    pd.DataFrame({PATH: ["x.png"], SEX: ["M"], AGE: [50], VIEW: ["AP"]}).to_csv(tmp_path / "ehr.csv", index=False)

    records, failures = scan_dicom_folder(tmp_path / "in", exclude=[tmp_path / "in" / "out_now"])
    assert [r[PATH] for r in records] == [str(tmp_path / "in" / "a.dcm")]
    assert [path for path, _ in failures] == [str(tmp_path / "in" / "x.png")]
    records, failures = scan_image_folder(tmp_path / "in", tmp_path / "ehr.csv", exclude=[tmp_path / "in" / "out_now"])
    assert [r[PATH] for r in records] == [str(tmp_path / "in" / "x.png")]
    assert [path for path, _ in failures] == [str(tmp_path / "in" / "a.dcm")]


def test_scan_dicom_folder_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        scan_dicom_folder(tmp_path / "absent")
