import struct
import zlib

import fire
import monai.bundle.scripts
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_diff3m import schema
from monai_diff3m.data.phantoms import render_case
from monai_diff3m.inferers import DEFAULT_SCORE, SCORE_NAMES

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
    assert list(scores.columns[:2]) == ["image", "anomaly_score"]
    assert (scores["anomaly_score"] == scores[DEFAULT_SCORE]).all()
    attention = scores[[column for column in scores.columns if column.startswith("attention[")]]
    fields = ["Age", "Sex", "AP/PA", "BMI", "Systolic BP", "Diastolic BP", "Height", "Weight"]
    assert list(attention.columns) == [f"attention[{name}]" for name in fields]  # one per field, not per category
    for _, row in scores.iterrows():
        for name in fields:  # a weight exactly for the fields the film had
            assert pd.isna(row[f"attention[{name}]"]) == pd.isna(row[name]), (row["image"], name)
    assert len(failures) == 1 and failures["path"].iloc[0].endswith("broken.png")
    assert "cannot decode" in failures["reason"].iloc[0]
    for relative in scores["map_nifti"]:
        assert nib.load(tmp_path / "out" / relative).shape == (32, 32)  # the phantom films' own size
    overlay = Image.open(tmp_path / "out" / scores["map_overlay"].iloc[0])
    assert overlay.mode == "RGB" and overlay.width == 32 and overlay.height > 32  # film, title and colour bar
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3 * 3 + 0 and "broken.png" in report


def _film(index: int, size: int = 64) -> np.ndarray:
    """A phantom chest film in [0, 1] (real-looking enough to pass the quality gate)."""
    return render_case(seed=5, index=index, image_size=size).image


def _save_png(path, film: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((film * 255).round().astype(np.uint8)).save(path)


def test_documented_dicom_only_command_reads_ehr_from_tags_and_keeps_missing_tags_missing(trained_bundle, tmp_path):
    """The documented ``--dicom_dir DIR`` command, parsed as ``python -m monai.bundle`` parses it (python-fire into
    ``monai.bundle.scripts.run``): it failed with "give exactly one input", since MONAI drops ``None`` overrides."""
    pixels = (_film(0) * 4000).astype(np.uint16)
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
    output = tmp_path / "out"

    fire.Fire(
        {"run": monai.bundle.scripts.run},
        command=[
            "run",
            "--config_file",
            "bundles/diff3m/configs/inference.json",
            "--dicom_dir",
            str(tmp_path / "dicom"),
            "--output_dir",
            str(output),
            "--bundle_root",
            str(trained_bundle),
            "--ieca_mode",
            "pooled",
            "--num_inference_steps",
            "2",
            "--noise_level",
            "100",
        ],
    )

    scores, failures = pd.read_csv(output / "scores.csv"), pd.read_csv(output / "failures.csv")
    scores = scores.set_index(scores["image"].str.split("/").str[-1])
    assert list(scores.index) == ["a.dcm", "b.dcm"]
    assert scores.loc["a.dcm", schema.SEX] == "Female" and scores.loc["a.dcm", schema.AGE] == 67.0
    assert pd.isna(scores.loc["b.dcm", schema.SEX])
    assert len(failures) == 1 and "PatientAge" in failures["reason"].iloc[0]
    spacing = nib.load(output / scores.loc["a.dcm", "map_nifti"]).header.get_zooms()
    np.testing.assert_allclose(spacing[:2], (0.5, 0.5))  # the map has the film's 64 px at 0.5 mm


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_every_probe_ends_in_a_score_or_a_named_failure_and_the_others_are_scored(trained_bundle, tmp_path):
    """One folder with the issue's probes beside good films, scored twice into an output folder inside it."""
    folder = tmp_path / "images"
    _save_png(folder / "patient1" / "study1" / "view1_frontal.png", _film(1))
    _save_png(folder / "patient3" / "study1" / "view1_frontal.png", _film(1))  # the same film again
    _save_png(folder / "other.png", _film(2))
    write_dicom(folder / "export" / "IM0003", (_film(3) * 4000).astype(np.uint16), bare=True)
    write_dicom(folder / "nan_spacing.dcm", (_film(4) * 4000).astype(np.uint16), PixelSpacing=["nan", "nan"])
    _save_png(folder / "black.png", np.zeros((64, 64)))
    _save_png(folder / "noise.png", np.random.default_rng(0).random((64, 64)))
    (folder / "huge.png").write_bytes(_png_header_bytes(20000, 10000))
    ehr = pd.DataFrame(
        {
            schema.PATH: [
                "patient2/study1/view1_frontal.png",
                "patient1/study1/view1_frontal.png",
                "patient3/study1/view1_frontal.png",
                "other.png",
                "export/IM0003",
                "nan_spacing.dcm",
                "black.png",
                "noise.png",
                "huge.png",
            ],
            schema.SEX: ["Female", "m", "M", " female ", "F", "M", "M", "M", "M"],
            schema.AGE: [85, 25, 25, 60, 70, 50, 50, 50, 50],
            schema.VIEW: ["AP", "pa", "PA", "AP Supine", "PA", "PA", "PA", "PA", "PA"],
        }
    )
    ehr.to_csv(tmp_path / "ehr.csv", index=False)
    output = folder / "out"

    first, failures = _score(
        trained_bundle, output, image_dir=str(folder), ehr_csv=str(tmp_path / "ehr.csv"), batch_size=2
    )

    scored = first.set_index(first["image"].str.replace(str(folder) + "/", ""))
    assert sorted(scored.index) == [
        "export/IM0003",
        "other.png",
        "patient1/study1/view1_frontal.png",
        "patient3/study1/view1_frontal.png",
    ]
    assert tuple(scored.loc["patient1/study1/view1_frontal.png", [schema.SEX, schema.AGE, schema.VIEW]]) == (
        "Male",
        25,
        "PA",
    )
    assert tuple(scored.loc["other.png", [schema.SEX, schema.VIEW]]) == ("Female", "AP")
    np.testing.assert_allclose(  # identical films score identically, in different batches and positions
        scored.loc["patient1/study1/view1_frontal.png", list(SCORE_NAMES)].astype(float),
        scored.loc["patient3/study1/view1_frontal.png", list(SCORE_NAMES)].astype(float),
        rtol=1e-5,
    )
    reasons = dict(zip(failures["path"].str.replace(str(folder) + "/", ""), failures["reason"]))
    assert set(reasons) == {
        "patient2/study1/view1_frontal.png",
        "nan_spacing.dcm",
        "black.png",
        "noise.png",
        "huge.png",
    }
    assert "no image" in reasons["patient2/study1/view1_frontal.png"]
    assert "PixelSpacing" in reasons["nan_spacing.dcm"] and "above the limit" in reasons["huge.png"]
    assert "(near-)constant" in reasons["black.png"] and "noise-like" in reasons["noise.png"]

    second, failures_again = _score(
        trained_bundle, output, image_dir=str(folder), ehr_csv=str(tmp_path / "ehr.csv"), batch_size=3, overwrite=True
    )
    pd.testing.assert_frame_equal(second, first)  # the output folder inside the input is not read back
    pd.testing.assert_frame_equal(failures_again, failures)


def _png_header_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
