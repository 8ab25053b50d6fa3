"""Tests of the phantom generator: layout and schema, reproducibility, lesions and masks, and above all that normal
anatomy varies a lot across patients but is explained by the EHR (measured on the rendered films)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from monai_diff3m import schema
from monai_diff3m.data import phantoms
from monai_diff3m.data.dataset_csv import read_dataset_csv
from monai_diff3m.data.phantoms import (
    LESION_TYPES,
    ensure_phantom_dataset,
    generate_phantom_dataset,
    main,
    measure_chest,
    render_case,
)

SEED = 3
SMALL = dict(num_train=3, num_val=4, num_test=4, image_size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms") / "data"
    paths = generate_phantom_dataset(
        root, num_train=240, num_val=20, num_test=40, image_size=64, missing_fraction=0.2, seed=SEED
    )
    return root, {split: pd.read_csv(path, keep_default_na=False, na_values=[""]) for split, path in paths.items()}


def _load(root, relative):
    return np.asarray(Image.open(root / relative))


def _measured_normals(root, table):
    sizes = [measure_chest(_load(root, path)) for path in table[schema.PATH]]
    return table.assign(
        heart=[m.heart_width for m in sizes],
        lung=[m.lung_height for m in sizes],
        ctr=[m.cardiothoracic_ratio for m in sizes],
    )


def _ehr_design(table):
    return np.column_stack(
        [
            np.ones(len(table)),
            table[schema.AGE],
            table[schema.SEX] == schema.SEX_VALUES[0],
            table[schema.VIEW] == schema.VIEW_VALUES[0],
            table[schema.BMI],
            table[schema.SYSTOLIC],
        ]
    ).astype(float)


def test_layout_columns_and_values_follow_schema(dataset):
    root, tables = dataset
    assert sorted(p.name for p in root.iterdir()) == [
        "images",
        "masks",
        "phantoms.json",
        "test.csv",
        "train.csv",
        "valid.csv",
    ]
    expected_columns = [*schema.CSV_COLUMNS, *schema.MIMIC_EHR_COLUMNS, schema.MASK, schema.LESION]
    everything = pd.concat(tables.values(), ignore_index=True)
    for table in tables.values():
        assert list(table.columns) == expected_columns
    assert len(everything) == 300 and everything[schema.PATIENT_ID].is_unique
    assert everything[schema.PATH].str.fullmatch(r"images/(train|valid|test)/\d{6}\.png").all()
    assert all((root / path).is_file() for path in everything[schema.PATH])
    assert set(everything[schema.SEX]) == set(schema.SEX_VALUES)
    assert set(everything[schema.VIEW]) == set(schema.VIEW_VALUES)
    assert (everything[schema.FRONTAL_LATERAL] == schema.FRONTAL).all()
    assert everything[schema.AGE].dtype.kind == "i" and everything[schema.AGE].between(18, 95).all()
    assert set(everything[schema.NO_FINDING]) == {0.0, 1.0}
    complete = everything.dropna(subset=list(schema.MIMIC_EHR_COLUMNS))
    implied_weight = complete[schema.BMI] * complete[schema.HEIGHT] ** 2 / 703.0
    np.testing.assert_allclose(complete[schema.WEIGHT], implied_weight, rtol=0.01)
    assert (complete[schema.SYSTOLIC] > complete[schema.DIASTOLIC]).all()
    assert complete[schema.BMI].between(16, 45).all() and complete[schema.HEIGHT].between(56, 80).all()
    male_height = complete.loc[complete[schema.SEX] == schema.SEX_VALUES[0], schema.HEIGHT].mean()
    female_height = complete.loc[complete[schema.SEX] == schema.SEX_VALUES[1], schema.HEIGHT].mean()
    assert 3.0 < male_height - female_height < 7.0
    missing_rate = everything[list(schema.MIMIC_EHR_COLUMNS)].isna().to_numpy().mean()
    assert 0.15 < missing_rate < 0.25
    assert everything[[schema.SEX, schema.AGE, schema.VIEW]].notna().all().all()
    parameters = json.loads((root / "phantoms.json").read_text())["parameters"]
    assert parameters["num_train"] == 240 and parameters["seed"] == SEED
    assert parameters["lesion_types"] == list(LESION_TYPES)


def test_splits_have_the_requested_abnormal_share_and_masks_exactly_for_abnormals(dataset):
    root, tables = dataset
    assert (tables["train"][schema.NO_FINDING] == 1.0).all() and tables["train"][schema.LESION].isna().all()
    for split, size in (("valid", 20), ("test", 40)):
        table = tables[split]
        abnormal = table[schema.NO_FINDING] == 0.0
        assert abnormal.sum() == size // 2
        assert (table[schema.LESION].notna() == abnormal).all() and (table[schema.MASK].notna() == abnormal).all()
        counts = table[schema.LESION].value_counts()
        assert set(counts.index) == set(LESION_TYPES) and counts.max() - counts.min() <= 1
    mask_files = {f"masks/{p.name}" for p in (root / "masks").iterdir()}
    listed = pd.concat(tables.values())[schema.MASK].dropna()
    assert mask_files == set(listed)
    for relative in listed:
        mask = _load(root, relative)
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}


def test_nodule_is_brighter_than_its_surroundings(dataset):
    root, tables = dataset
    nodules = tables["test"][tables["test"][schema.LESION] == "nodule"]
    assert len(nodules) >= 2
    for path, mask_path in zip(nodules[schema.PATH], nodules[schema.MASK]):
        image, mask = _load(root, path).astype(float), _load(root, mask_path) > 0
        ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask, iterations=1)
        assert image[mask].mean() > image[ring].mean() + 40


@pytest.mark.parametrize("lesion", ["nodule", "consolidation", "effusion"])
def test_mask_covers_exactly_where_the_lesion_changes_the_film(lesion):
    for index in range(5):
        normal, abnormal = render_case(SEED, index, 64), render_case(SEED, index, 64, lesion)
        assert normal.ehr == abnormal.ehr and normal.mask is None
        difference = abnormal.image - normal.image
        mask = abnormal.mask
        assert mask.sum() >= 20
        assert difference[mask].mean() > 0.15 and (difference[mask] > 0.05).mean() > 0.9
        assert np.abs(difference[~ndimage.binary_dilation(mask, iterations=3)]).max() < 0.02


@pytest.mark.parametrize("size", [32, 256])
def test_every_lesion_is_visible_at_small_and_large_sizes(size):
    for lesion in LESION_TYPES:
        case = render_case(SEED, 7, size, lesion)
        assert case.image.shape == case.mask.shape == (size, size)
        assert case.mask.sum() >= 0.005 * size * size
        lung = render_case(SEED, 7, size).image < 0.4
        assert case.image[case.mask].mean() > case.image[lung & ~case.mask].mean() + 0.15


def test_reproducible_bytes_and_seed_dependence(tmp_path, dataset):
    first = generate_phantom_dataset(tmp_path / "a", seed=SEED, **SMALL)
    second = generate_phantom_dataset(tmp_path / "b", seed=SEED, **SMALL)
    other = generate_phantom_dataset(tmp_path / "c", seed=SEED + 1, **SMALL)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 + 11 + sum(1 for p in (tmp_path / "a" / "masks").iterdir()) + 1
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    assert first["test"].read_bytes() == second["test"].read_bytes()
    assert first["train"].read_bytes() != other["train"].read_bytes()
    assert (tmp_path / "a" / "images/train/000000.png").read_bytes() != (
        tmp_path / "c" / "images/train/000000.png"
    ).read_bytes()
    root, tables = dataset
    path = tables["train"][schema.PATH].iloc[5]
    rendered = np.round(render_case(SEED, 5, 64).image * 255).astype(np.uint8)
    np.testing.assert_array_equal(_load(root, path), rendered)


def test_heart_size_follows_age_sex_and_view(dataset):
    root, tables = dataset
    normals = _measured_normals(root, tables["train"])
    male = normals[schema.SEX] == schema.SEX_VALUES[0]
    ap = normals[schema.VIEW] == schema.VIEW_VALUES[0]
    assert np.corrcoef(normals[schema.AGE], normals["heart"])[0, 1] > 0.3
    assert np.corrcoef(normals.loc[~ap, schema.AGE], normals.loc[~ap, "heart"])[0, 1] > 0.3
    complete = normals.dropna(subset=[schema.BMI, schema.SYSTOLIC])
    coefficients, *_ = np.linalg.lstsq(_ehr_design(complete), np.log(complete["heart"].to_numpy()), rcond=None)
    assert coefficients[1] * 60 > np.log(1.06), "heart should grow >6% from age 20 to 80, other EHR held fixed"
    assert normals.loc[male, "heart"].mean() > 1.05 * normals.loc[~male, "heart"].mean()
    assert normals.loc[ap, "heart"].mean() > 1.12 * normals.loc[~ap, "heart"].mean()
    young_female_pa = normals[(normals[schema.AGE] < 45) & ~male & ~ap]["heart"]
    old_male_ap = normals[(normals[schema.AGE] > 65) & male & ap]["heart"]
    assert len(young_female_pa) >= 5 and len(old_male_ap) >= 5
    assert old_male_ap.mean() > 1.3 * young_female_pa.mean()


def test_normal_variation_is_explained_by_the_ehr(dataset):
    root, tables = dataset
    normals = _measured_normals(root, tables["train"]).dropna(subset=[schema.BMI, schema.SYSTOLIC, schema.HEIGHT])
    log_heart = np.log(normals["heart"].to_numpy())
    design = _ehr_design(normals)
    coefficients, *_ = np.linalg.lstsq(design, log_heart, rcond=None)
    residual = log_heart - design @ coefficients
    assert log_heart.std() > 0.09
    assert residual.std() < 0.04
    assert 1.0 - residual.var() / log_heart.var() > 0.85
    assert np.corrcoef(normals[schema.HEIGHT], normals["lung"])[0, 1] > 0.9


def test_cardiomegaly_is_within_the_normal_range_but_too_big_for_the_ehr(dataset):
    root, tables = dataset
    normals = _measured_normals(root, tables["train"]).dropna(subset=[schema.BMI, schema.SYSTOLIC])
    design = _ehr_design(normals)
    coefficients, *_ = np.linalg.lstsq(design, np.log(normals["heart"].to_numpy()), rcond=None)
    normal_residual = np.log(normals["heart"].to_numpy()) - design @ coefficients

    cases = [render_case(SEED, 1000 + index, 64, "cardiomegaly") for index in range(30)]
    enlarged = pd.DataFrame(
        [
            {
                schema.AGE: case.ehr.age,
                schema.SEX: case.ehr.sex,
                schema.VIEW: case.ehr.view,
                schema.BMI: case.ehr.bmi,
                schema.SYSTOLIC: case.ehr.systolic,
                "heart": measure_chest(case.image).heart_width,
                "ctr": measure_chest(case.image).cardiothoracic_ratio,
                "mask": case.mask.sum(),
            }
            for case in cases
        ]
    )
    residual = np.log(enlarged["heart"].to_numpy()) - _ehr_design(enlarged) @ coefficients
    assert (enlarged["mask"] > 0).all()
    assert (enlarged["ctr"] <= normals["ctr"].max()).mean() >= 0.9
    assert np.median(residual) > np.log(1.2)
    assert residual.min() > np.percentile(normal_residual, 95)


def test_cardiomegaly_mask_is_heart_where_lung_used_to_be():
    for index in range(5):
        case = render_case(SEED, 2000 + index, 64, "cardiomegaly")
        lung = case.image < 0.4
        assert case.mask.sum() >= 20
        assert case.image[case.mask].mean() > case.image[lung].mean() + 0.2
        columns = np.nonzero(case.mask.any(axis=0))[0]
        assert columns.max() > 32, "the heart grows towards the image right (the patient's left)"


def test_generated_csvs_load_with_the_dataset_reader(dataset):
    root, tables = dataset
    records = read_dataset_csv(root / "test.csv")
    assert [record["label"] for record in records] == (tables["test"][schema.NO_FINDING] == 0.0).astype(int).tolist()
    assert all((record["mask"] is None) == (record["label"] == 0) for record in records)


def test_ensure_reuses_matching_dataset_and_names_different_parameters(tmp_path, monkeypatch):
    root = tmp_path / "phantoms"
    paths = ensure_phantom_dataset(root, seed=SEED, **SMALL)
    assert paths == {split: root / f"{split}.csv" for split in ("train", "valid", "test")}
    stamp = (root / "phantoms.json").stat().st_mtime_ns
    (tmp_path / "empty").mkdir()
    assert ensure_phantom_dataset(tmp_path / "empty", seed=SEED, **SMALL)["test"].is_file()

    def no_rendering(*args, **kwargs):
        raise AssertionError("ensure_phantom_dataset regenerated a matching dataset")

    monkeypatch.setattr(phantoms, "render_case", no_rendering)
    assert ensure_phantom_dataset(root, seed=SEED, **SMALL) == paths
    assert (root / "phantoms.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"image_size: existing 32 vs requested 48") as error:
        ensure_phantom_dataset(root, seed=SEED, **{**SMALL, "image_size": 48})
    assert str(root) in str(error.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not phantoms")
    with pytest.raises(ValueError, match="not a phantom dataset"):
        ensure_phantom_dataset(tmp_path / "other", seed=SEED, **SMALL)
    with pytest.raises(FileExistsError, match="not an empty folder"):
        generate_phantom_dataset(tmp_path / "other", seed=SEED, **SMALL)


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    original = phantoms.render_case

    def failing_render(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(phantoms, "render_case", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom_dataset(tmp_path / "phantoms", seed=SEED, **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ({"image_size": 16}, "image_size must be an integer of at least 32"),
        ({"lesion_types": ["tumour"]}, "lesion_types must be distinct names"),
        ({"anomaly_fraction": 1.5}, r"anomaly_fraction must be in \[0, 1\]"),
        ({"num_train": -1}, "num_train must be a non-negative integer"),
        ({"num_train": 0, "num_val": 0, "num_test": 0}, "nothing to generate"),
    ],
)
def test_bad_parameters_are_named(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        generate_phantom_dataset(tmp_path / "phantoms", **{**SMALL, **override})
    assert not (tmp_path / "phantoms").exists()


def test_measure_chest_rejects_non_films():
    with pytest.raises(ValueError, match="2-D grayscale"):
        measure_chest(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="no lung fields"):
        measure_chest(np.zeros((64, 64), dtype=np.uint8))


def test_cli_generates_prints_counts_and_reuses(tmp_path, capsys):
    argv = [
        "--output",
        str(tmp_path / "cli"),
        "--num-train",
        "3",
        "--num-val",
        "2",
        "--num-test",
        "4",
        "--image-size",
        "32",
        "--seed",
        "5",
        "--anomaly-fraction",
        "0.5",
        "--missing-fraction",
        "0.1",
    ]
    paths = main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"train: {paths['train']} (3 images, 0 abnormal)",
        f"valid: {paths['valid']} (2 images, 1 abnormal)",
        f"test: {paths['test']} (4 images, 2 abnormal)",
    ]
    assert main(argv) == paths
    with pytest.raises(SystemExit):
        main([*argv[:-2], "--missing-fraction", "0.3"])
    assert "missing_fraction: existing 0.1 vs requested 0.3" in capsys.readouterr().err


def test_a_field_added_to_the_table_gets_values_and_leaves_the_others_unchanged(tmp_path, monkeypatch):
    """Every table field is a column; one without a simulation is drawn apart, so the other columns keep their values,
    and a dataset generated before the field joined the table is refused rather than read with an empty column."""
    small = {"num_train": 6, "num_val": 4, "num_test": 4, "image_size": 32, "missing_fraction": 0.3}
    before = {
        split: pd.read_csv(path) for split, path in phantoms.ensure_phantom_dataset(tmp_path / "a", **small).items()
    }
    extra = schema.EHRField("Lactate", "measurements", plausible_range=(0.1, 30.0), unit="mmol/L")
    monkeypatch.setattr(schema, "EHR_FIELDS", (*schema.EHR_FIELDS, extra))
    after = {
        split: pd.read_csv(path) for split, path in phantoms.ensure_phantom_dataset(tmp_path / "b", **small).items()
    }

    for split, table in after.items():
        pd.testing.assert_frame_equal(table.drop(columns="Lactate"), before[split])
        assert list(table.columns).index("Lactate") == list(table.columns).index(schema.MASK) - 1
    lactate = pd.concat([table["Lactate"] for table in after.values()])
    assert lactate.notna().any() and lactate.dropna().between(7.5, 22.6).all()
    with pytest.raises(ValueError, match=r"no column\(s\) \['Lactate'\] in train.csv"):
        phantoms.ensure_phantom_dataset(tmp_path / "a", **small)
