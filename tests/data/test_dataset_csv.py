import pandas as pd
import pytest
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.data.dataset_csv import DatasetCSVError, read_dataset_csv


def _write(tmp_path, rows, columns=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    for row in rows:
        Image.new("L", (8, 8)).save(tmp_path / row[schema.PATH])
    frame = pd.DataFrame(rows, columns=columns)
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    return path


ROW = {
    schema.PATH: "img/a.png",
    schema.SEX: "Male",
    schema.AGE: 50,
    schema.FRONTAL_LATERAL: "Frontal",
    schema.VIEW: "PA",
    schema.NO_FINDING: 1.0,
}


def test_records_have_absolute_image_label_and_schema_fields(tmp_path):
    rows = [
        ROW,
        {**ROW, schema.PATH: "img/b.png", schema.NO_FINDING: None},
        {**ROW, schema.PATH: "img/c.png", schema.FRONTAL_LATERAL: "Lateral"},
    ]
    records = read_dataset_csv(_write(tmp_path, rows))
    assert [r["label"] for r in records] == [0, 1]
    assert records[0]["image"] == str(tmp_path / "img/a.png")
    assert records[0][schema.AGE] == 50 and records[0]["mask"] is None


def test_missing_column_is_named(tmp_path):
    path = _write(tmp_path, [ROW], columns=[schema.PATH, schema.SEX, schema.VIEW])
    with pytest.raises(DatasetCSVError, match=r"lacks required column\(s\) \['Age'\]"):
        read_dataset_csv(path)


def test_empty_csv_and_missing_image_and_duplicates(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetCSVError, match="empty"):
        read_dataset_csv(empty)
    path = _write(tmp_path, [ROW])
    (tmp_path / "img/a.png").unlink()
    with pytest.raises(DatasetCSVError, match="row 2: image .*a.png does not exist"):
        read_dataset_csv(path)
    path = _write(tmp_path, [ROW, ROW])
    with pytest.raises(DatasetCSVError, match="more than once"):
        read_dataset_csv(path)


def test_frontal_in_any_case_is_kept_and_lateral_rows_are_counted(tmp_path, caplog):
    """Rows whose ``Frontal/Lateral`` was ``frontal`` in lower case left the metrics (n 20 of 40) without a word."""
    rows = [
        {**ROW, schema.PATH: "img/a.png", schema.FRONTAL_LATERAL: "frontal"},
        {**ROW, schema.PATH: "img/b.png", schema.FRONTAL_LATERAL: " FRONTAL "},
        {**ROW, schema.PATH: "img/c.png", schema.FRONTAL_LATERAL: "lateral"},
        {**ROW, schema.PATH: "img/d.png", schema.FRONTAL_LATERAL: None},
    ]
    with caplog.at_level("WARNING"):
        records = read_dataset_csv(_write(tmp_path, rows))
    assert [record["image"].split("/")[-1] for record in records] == ["a.png", "b.png", "d.png"]
    assert "1 lateral row(s) left out" in caplog.text
    path = _write(tmp_path, [{**ROW, schema.FRONTAL_LATERAL: "oblique"}])
    with pytest.raises(DatasetCSVError, match="row 2: Frontal/Lateral 'oblique' is neither 'Frontal' nor 'Lateral'"):
        read_dataset_csv(path)
