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
    scan_image_folder,
)
from monai_diff3m.data.input_files import OUTPUT_FOLDER_MARKER
from monai_diff3m.schema import AGE, EHR_ROW, FRONTAL, FRONTAL_LATERAL, PATH, SEX, SEX_VALUES, VIEW
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
        {PATH: str(images / "a.png"), SEX: "Male", AGE: 67.0, VIEW: "AP", "BMI": 24.5, EHR_ROW: "row 2: a.png"},
        {
            PATH: str(images / "sub" / "b.jpg"),
            SEX: None,
            AGE: None,
            VIEW: "PA",
            "BMI": None,
            EHR_ROW: "row 3: sub/b.jpg",
        },
    ]  # row 'c.dcm' does not key 'sub/c.dcm': the row names no sub-folder
    assert [path for path, _ in failures] == [
        str(images / "c.dcm"),
        str(images / "ghost.png"),
        str(images / "b.jpg"),
        str(images / "lateral.png"),
        str(images / "old.png"),
        str(images / "orphan.png"),
        str(dicom),
    ]
    reasons = [reason for _, reason in failures]
    assert all(str(csv) in reason for reason in reasons)
    assert "row 4" in reasons[0] and "'sub/c.dcm' lie in sub-folders the row does not name" in reasons[0]
    assert "row 5" in reasons[1] and "'ghost.png'" in reasons[1]
    assert "row 8" in reasons[2] and "'sub/b.jpg' lie in sub-folders the row does not name" in reasons[2]
    assert "row 6" in reasons[3] and "'LL'" in reasons[3]
    assert "row 7" in reasons[4] and "150" in reasons[4]
    assert "no row" in reasons[5] and "no row" in reasons[6]


def _png(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)


def test_scan_image_folder_never_gives_an_image_another_patients_row(tmp_path):
    """The issue's probe: CheXpert/MIMIC repeat file names across patients; a row for patient2 must not key
    patient1's film (it did: the file-name fallback took the first row and rejected the image's own)."""
    _png(tmp_path / "images" / "patient1" / "study1" / "view1_frontal.png")
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {
            PATH: ["patient2/study1/view1_frontal.png", "patient1/study1/view1_frontal.png"],
            SEX: ["Female", "Male"],
            AGE: [85, 25],
            VIEW: ["AP", "PA"],
        }
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(tmp_path / "images", csv)

    assert [(r[PATH], r[SEX], r[AGE], r[VIEW]) for r in records] == [
        (str(tmp_path / "images" / "patient1" / "study1" / "view1_frontal.png"), "Male", 25, "PA")
    ]
    assert len(failures) == 1 and failures[0][0] == str(
        tmp_path / "images" / "patient2" / "study1" / "view1_frontal.png"
    )
    assert "row 2" in failures[0][1] and "no image" in failures[0][1]


def test_file_name_fallback_only_when_unambiguous_and_ambiguities_name_both_paths(tmp_path):
    images = tmp_path / "images"
    for relative in ("p1/s1/view1.png", "p2/s1/view1.png", "x.png", "study/y.png"):
        _png(images / relative)
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {
            PATH: ["view1.png", "images/test/x.png", "a/y.png", "b/y.png"],
            SEX: ["Male", "Female", "Male", "Female"],
            AGE: [30, 40, 50, 60],
            VIEW: ["PA", "AP", "PA", "AP"],
        }
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(images, csv)

    assert [(r[PATH], r[AGE]) for r in records] == [(str(images / "x.png"), 40)]  # dataset-CSV path keys x.png
    reasons = dict(failures)
    assert (
        "'p1/s1/view1.png', 'p2/s1/view1.png' lie in sub-folders the row does not name"
        in reasons[str(images / "view1.png")]
    )
    assert "but no image" in reasons[str(images / "a" / "y.png")]  # study/y.png is another folder than a/y.png
    assert {path for path, _ in failures} >= {str(images / "p1/s1/view1.png"), str(images / "p2/s1/view1.png")}


def test_one_file_named_by_two_rows_is_not_scored_and_the_failure_names_both(tmp_path):
    _png(tmp_path / "images" / "x.png")
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {PATH: ["train/x.png", "test/x.png"], SEX: ["Male", "Female"], AGE: [30, 80], VIEW: ["PA", "AP"]}
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(tmp_path / "images", csv)

    assert records == []
    assert failures == [
        (
            str(tmp_path / "images" / "x.png"),
            f"several rows of {csv} name this image (row 2 'train/x.png', "
            "row 3 'test/x.png'): its EHR is ambiguous, so it is not scored; keep one row per image",
        )
    ]


def test_csv_sex_and_view_share_the_dicom_vocabulary(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "images" / name)
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {
            PATH: ["a.png", "b.png", "c.png"],
            SEX: ["M", " female ", "O"],
            AGE: [30, 40, 50],
            VIEW: ["ap", "AP Supine", " PA "],
        }
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(tmp_path / "images", csv)

    assert failures == []
    assert [(r[SEX], r[VIEW]) for r in records] == [("Male", "AP"), ("Female", "AP"), (None, "PA")]


def test_scan_image_folder_missing_columns_named(tmp_path):
    csv = tmp_path / "ehr.csv"
    pd.DataFrame({PATH: ["a.png"], SEX: ["Male"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=rf"ehr\.csv.*\['{AGE}', '{VIEW}'\]"):
        scan_image_folder(tmp_path, csv)


def test_every_file_of_the_image_folder_is_scored_or_a_failure(tmp_path):
    """``.tif`` and ``.bmp`` films without a CSV row were in neither ``scores.csv`` nor ``failures.csv``."""
    images = tmp_path / "images"
    for name in ("a.png", "b.tif", "c.bmp"):
        _png(images / name)
    for name in ("notes.txt", ".DS_Store"):
        (images / name).write_text("not a film")
    csv = images / "ehr.csv"  # the EHR CSV inside the image folder is not an input
    pd.DataFrame({PATH: ["a.png"], SEX: ["M"], AGE: [50], VIEW: ["AP"]}).to_csv(csv, index=False)

    records, failures = scan_image_folder(images, csv)

    assert [record[PATH] for record in records] == [str(images / "a.png")]
    reasons = dict(failures)
    assert sorted(reasons) == [str(images / name) for name in ("b.tif", "c.bmp", "notes.txt")]
    assert "no row of" in reasons[str(images / "b.tif")] and ".tif is not a film" in reasons[str(images / "b.tif")]


def test_a_short_row_never_keys_an_image_in_a_sub_folder_and_every_record_names_its_row(tmp_path):
    """Row ``x.png`` (patient A, whose film is absent) scored patient B's ``sub/x.png`` with no failure and no
    mark of which row was used; lower-case ``frontal`` rows were refused."""
    images = tmp_path / "images"
    _png(images / "sub" / "x.png")
    _png(images / "y.png")
    csv = tmp_path / "ehr.csv"
    pd.DataFrame(
        {
            PATH: ["x.png", "test/images/y.png"],
            SEX: ["F", "M"],
            AGE: [85, 25],
            FRONTAL_LATERAL: ["frontal", "frontal"],
            VIEW: ["AP", "PA"],
        }
    ).to_csv(csv, index=False)

    records, failures = scan_image_folder(images, csv)

    assert [(record[PATH], record[EHR_ROW]) for record in records] == [
        (str(images / "y.png"), "row 3: test/images/y.png")
    ]
    reasons = dict(failures)
    assert "'sub/x.png' lie in sub-folders the row does not name" in reasons[str(images / "x.png")]
    assert "image has no row" in reasons[str(images / "sub" / "x.png")]
