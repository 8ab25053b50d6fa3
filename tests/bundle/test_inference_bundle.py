import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from monai_diff3m.data import schema
from monai_diff3m.inferers import SCORE_NAMES

from dicom_files import write_dicom
from tiny_bundle import run_workflow, scoring_overrides

FAST_SCORING = {"num_inference_steps": 2, "noise_level": 100}


def _score(trained_bundle, output_dir, **inputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_workflow(
        "inference.json", "run", scoring_overrides(trained_bundle, output_dir=str(output_dir), **FAST_SCORING, **inputs)
    )
    return pd.read_csv(output_dir / "scores.csv"), pd.read_csv(output_dir / "failures.csv")


def test_folder_with_ehr_csv_scores_every_readable_image_and_reports_the_broken_one(trained_bundle, tmp_path):
    source = pd.read_csv(trained_bundle / "data" / "phantoms" / "test.csv").head(3)
    folder = tmp_path / "images"
    folder.mkdir()
    for path in source[schema.PATH]:
        Image.open(trained_bundle / "data" / "phantoms" / path).save(folder / path.split("/")[-1])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ehr = source.assign(**{schema.PATH: source[schema.PATH].str.split("/").str[-1]})
    ehr = pd.concat([ehr, ehr.head(1).assign(**{schema.PATH: "broken.png"})])
    ehr.to_csv(tmp_path / "ehr.csv", index=False)

    scores, failures = _score(
        trained_bundle, tmp_path / "out", image_dir=str(folder), ehr_csv=str(tmp_path / "ehr.csv")
    )

    assert len(scores) == 3 and set(SCORE_NAMES) <= set(scores.columns)
    assert scores[list(SCORE_NAMES)].notna().all().all()
    assert list(scores[schema.AGE]) == list(source[schema.AGE])
    attention = scores[[column for column in scores.columns if column.startswith("attention[")]]
    assert attention.shape[1] == 10
    np.testing.assert_allclose(attention.sum(axis=1), 2.0, rtol=1e-5)  # softmax within each of the two groups
    assert len(failures) == 1 and failures["path"].iloc[0].endswith("broken.png")
    assert "cannot decode" in failures["reason"].iloc[0]
    for relative in scores["map_nifti"]:
        assert nib.load(tmp_path / "out" / relative).shape == (32, 32)
    assert Image.open(tmp_path / "out" / scores["map_overlay"].iloc[0]).mode == "RGB"


def test_dicom_folder_reads_ehr_from_tags_and_keeps_missing_tags_missing(trained_bundle, tmp_path):
    pixels = (np.random.default_rng(0).random((64, 64)) * 4000).astype(np.uint16)
    write_dicom(
        tmp_path / "dicom" / "a.dcm",
        pixels,
        PatientSex="F",
        PatientAge="067Y",
        ViewPosition="PA",
        PixelSpacing=[0.5, 0.5],
    )
    write_dicom(tmp_path / "dicom" / "b.dcm", pixels, PatientAge="045Y", ViewPosition="AP")
    write_dicom(tmp_path / "dicom" / "c.dcm", pixels, PatientAge="abc", ViewPosition="AP")

    scores, failures = _score(
        trained_bundle, tmp_path / "out", image_dir=None, ehr_csv=None, dicom_dir=str(tmp_path / "dicom")
    )

    scores = scores.set_index(scores["image"].str.split("/").str[-1])
    assert list(scores.index) == ["a.dcm", "b.dcm"]
    assert scores.loc["a.dcm", schema.SEX] == "Female" and scores.loc["a.dcm", schema.AGE] == 67.0
    assert pd.isna(scores.loc["b.dcm", schema.SEX])
    assert len(failures) == 1 and "PatientAge" in failures["reason"].iloc[0]
    spacing = nib.load(tmp_path / "out" / scores.loc["a.dcm", "map_nifti"]).header.get_zooms()
    np.testing.assert_allclose(spacing[:2], (1.0, 1.0))  # 64 px at 0.5 mm resized to 32 px
