"""End to end: both pipelines' CSVs load with the bundles' reader, ``read_dataset_csv``, over real tiny JPEGs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.data.dataset_csv import IMAGE_KEY, LABEL_KEY, read_dataset_csv
from monai_diff3m.preprocessing import chexpert
from monai_diff3m.preprocessing.mimic import layout, run_all
from monai_diff3m.preprocessing.mimic.synthetic import write_synthetic_mimic

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,"
    "Pleural Other,Fracture,Support Devices"
).split(",")


def _write_jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path, format="JPEG")


def _write_chexpert(root: Path) -> None:
    """``train.csv`` / ``valid.csv`` of 40 + 10 patients (frontal + lateral each) and their JPEGs."""
    rng = np.random.default_rng(0)
    for table, first, count in (("train", 1, 40), ("valid", 64541, 10)):
        rows = []
        for patient in range(first, first + count):
            normal = patient % 2 == 0
            labels = [1.0 if normal else np.nan] + [np.nan] * 12 + [np.nan]
            if not normal:
                labels[1 + patient % 12] = 1.0
            for view, frontal, position in (("view1_frontal", "Frontal", "PA"), ("view2_lateral", "Lateral", None)):
                path = f"{root.name}/{table}/patient{patient:05d}/study1/{view}.jpg"
                rows.append(
                    [path, ("Male", "Female")[patient % 2], int(rng.integers(20, 90)), frontal, position, *labels]
                )
                _write_jpeg(root.parent / path, patient % 256)
        pd.DataFrame(rows, columns=CHEXPERT_HEADER).to_csv(root / f"{table}.csv", index=False)


def test_chexpert_outputs_load_into_the_training_reader(tmp_path):
    root = tmp_path / "datasets" / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    _write_chexpert(root)
    chexpert.prepare_chexpert(root, tmp_path / "csv", valid_fraction=0.2, test_fraction=0.3, seed=0)
    loaded = {
        name: read_dataset_csv(tmp_path / "csv" / f"{name}.csv", image_root=root.parent)
        for name in ("train", "valid", "test")
    }
    assert sum(len(records) for records in loaded.values()) > 25
    assert {record[LABEL_KEY] for record in loaded["train"]} == {0}
    assert {record[LABEL_KEY] for record in loaded["test"]} == {0, 1}
    for records in loaded.values():
        for record in records:
            assert Path(record[IMAGE_KEY]).is_file()
            assert record[schema.VIEW] == "PA" and record[schema.SEX] in schema.SEX_VALUES
            assert Image.open(record[IMAGE_KEY]).size == (8, 8)


def test_mimic_outputs_load_into_the_training_reader(tmp_path):
    mimic_cxr, mimic_iv = tmp_path / "mimic-cxr-jpg" / "2.0.0", tmp_path / "mimiciv" / "3.1"
    write_synthetic_mimic(mimic_cxr, mimic_iv, images=300, omr_rows=20_000, seed=1)
    metadata = pd.read_csv(mimic_cxr / f"{layout.METADATA}.csv.gz", dtype={"dicom_id": str})
    paths = layout.image_paths(metadata["subject_id"], metadata["study_id"], metadata["dicom_id"])
    absent = set(paths.iloc[:20])
    for index, relative in enumerate(paths):
        if relative not in absent:
            _write_jpeg(mimic_cxr / relative, index % 256)

    run_all.main(["--mimic-cxr", str(mimic_cxr), "--mimic-iv", str(mimic_iv), "--output", str(tmp_path / "csv")])
    loaded = {
        name: read_dataset_csv(tmp_path / "csv" / f"{name}.csv", image_root=mimic_cxr)
        for name in ("train", "valid", "test")
    }
    records = [record for split in loaded.values() for record in split]
    assert {record[LABEL_KEY] for record in loaded["train"]} == {0}
    assert {record[LABEL_KEY] for record in loaded["test"]} == {0, 1}
    assert not {record[schema.PATH] for record in records} & absent
    assert all(record[schema.VIEW] in schema.VIEW_VALUES for record in records)
    weights = [record[schema.WEIGHT] for record in records]
    assert any(math.isnan(weight) for weight in weights) and any(not math.isnan(weight) for weight in weights)
    assert all(isinstance(record[schema.BMI], float) for record in records)
