"""Image folders joined with an EHR CSV (``data.image_folder``): every file a record or a named failure, never another
patient's row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_diff3m.data.image_folder import scan_image_folder
from monai_diff3m.schema import AGE, EHR_ROW, FRONTAL_LATERAL, PATH, SEX, VIEW

from dicom_files import write_dicom


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
