"""CSV encodings and malformed rows are named errors (file, line, remedy), for dataset and EHR CSVs alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from monai_diff3m.data.csv_files import DatasetCSVError
from monai_diff3m.data.dataset_csv import read_dataset_csv
from monai_diff3m.data.image_folder import scan_image_folder

HEADER = "Path,Sex,Age,AP/PA,No Finding\n"
ROWS = "a.png,Female,61,PA,1.0\nb.png,Male,40,AP,\n"


@pytest.fixture()
def folder(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    return tmp_path


def _readers(folder, csv):
    return (lambda: read_dataset_csv(csv, folder), lambda: scan_image_folder(folder, csv))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_utf8_with_bom_and_utf16_are_read(folder, encoding):
    csv = folder / "ehr.csv"
    csv.write_bytes((HEADER + ROWS).encode(encoding))
    records = read_dataset_csv(csv, folder)
    assert [r["Sex"] for r in records] == ["Female", "Male"] and [r["label"] for r in records] == [0, 1]
    assert [r["Path"] for r in scan_image_folder(folder, csv)[0]] == [str(folder / "a.png"), str(folder / "b.png")]


def test_latin1_csv_is_a_named_error(folder):
    """A Latin-1 export raised a bare UnicodeDecodeError without the file name."""
    csv = folder / "ehr.csv"
    csv.write_bytes((HEADER + ROWS + "c\xe9.png,Female,50,PA,1.0\n").encode("latin-1"))
    for read in _readers(folder, csv):
        with pytest.raises(DatasetCSVError, match=r"ehr\.csv is not UTF-8 text .*save it as UTF-8 CSV"):
            read()


def test_utf16_without_byte_order_mark_is_a_named_error(folder):
    csv = folder / "ehr.csv"
    csv.write_bytes((HEADER + ROWS).encode("utf-16-le"))
    for read in _readers(folder, csv):
        with pytest.raises(
            DatasetCSVError, match=r"ehr\.csv contains NUL bytes: it is UTF-16 without a byte-order mark"
        ):
            read()


def test_ragged_csv_is_a_named_error_with_the_line(folder):
    """A row with an unquoted comma raised pandas' ParserError without the file name."""
    csv = folder / "ehr.csv"
    csv.write_text(HEADER + ROWS + "c.png,Female,50,PA,1.0,Smith, John\n")
    for read in _readers(folder, csv):
        with pytest.raises(DatasetCSVError, match=r"ehr\.csv is not a well-formed CSV: .*line 4.*quote values"):
            read()
