"""The EHR field table is the one place a field is declared: adding an entry to ``schema.EHR_FIELDS`` is enough to
train and score with it, and what cannot be derived from the table (the bundle's ``metadata.json``) is checked
against it here."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.checkpoints import CheckpointSettingError, network_for_checkpoint
from monai_diff3m.transforms import EHRStatistics, ehr_group_sizes, ehr_slot_names

from tiny_bundle import CONFIGS, run_workflow, scoring_overrides, tiny_overrides

#: A measurement the project does not use (MIMIC-IV ``omr`` has no lactate), declared the way a user would add one.
LACTATE = schema.EHRField(
    "Lactate", "measurements", plausible_range=(0.1, 30.0), unit="mmol/L", omr=schema.OmrSource("Lactate (mmol/L)")
)
PHANTOMS = {"num_train": 32, "num_val": 16, "num_test": 16, "image_size": 32, "seed": 0}


def test_metadata_describes_the_slots_of_the_default_groups():
    """``metadata.json`` is static JSON: its EHR input must be the table's slots for train.json's groups."""
    train = json.loads((CONFIGS / "train.json").read_text())
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    inputs = metadata["network_data_format"]["inputs"]
    slots = ehr_slot_names(train["ehr_groups"])
    for key in ("ehr", "ehr_missing"):
        assert inputs[key]["num_channels"] == len(slots), f"metadata.json {key}#num_channels must be {len(slots)}"
    absent = [
        field.name for field in schema.ehr_fields(train["ehr_groups"]) if field.name not in inputs["ehr"]["format"]
    ]
    assert not absent, f"metadata.json's ehr#format does not name the EHR field(s) {absent}"


def test_the_table_derives_every_column_list_and_the_mimic_mapping():
    from monai_diff3m.preprocessing.mimic.step1_omr_ehr import OMR_FEATURES

    names = [field.name for field in schema.EHR_FIELDS]
    assert len(set(names)) == len(names), f"EHR field names must be unique: {names}"
    assert schema.EHR_COLUMNS == schema.ehr_columns() == (*schema.DEMOGRAPHIC_COLUMNS, *schema.MIMIC_EHR_COLUMNS)
    assert OMR_FEATURES == schema.omr_sources()
    assert (
        OMR_FEATURES.items()
        >= {
            "BMI (kg/m2)": (schema.BMI,),
            "Blood Pressure": (schema.SYSTOLIC, schema.DIASTOLIC),
            "Height (Inches)": (schema.HEIGHT,),
            "Weight (Lbs)": (schema.WEIGHT,),
        }.items()
    )
    tags = {field.name: field.dicom_tag for field in schema.EHR_FIELDS}
    assert (tags[schema.AGE], tags[schema.SEX], tags[schema.VIEW]) == ("PatientAge", "PatientSex", "ViewPosition")
    with pytest.raises(ValueError, match="needs a normaliser"):
        schema.EHRField("Lactate", "labs")


@pytest.fixture
def with_lactate(monkeypatch):
    """The table with one more measurement, as if its entry had been added to ``schema.EHR_FIELDS``."""
    sizes = ehr_group_sizes(["demographics", "measurements"])
    monkeypatch.setattr(schema, "EHR_FIELDS", (*schema.EHR_FIELDS, LACTATE))
    return monkeypatch, sizes


@pytest.mark.slow
def test_a_field_added_to_the_table_trains_and_scores(with_lactate, tmp_path):
    monkeypatch, (demographics, measurements) = with_lactate
    sizes, slots = [demographics, measurements + 1], demographics + measurements + 1
    assert ehr_group_sizes(["demographics", "measurements"]) == sizes
    assert schema.omr_sources()["Lactate (mmol/L)"] == ("Lactate",)
    overrides = tiny_overrides(tmp_path, phantoms=PHANTOMS, max_epochs=1, val_interval=1, batch_size=8)
    training = run_workflow("train.json", "training", overrides)

    network = training.parser.get_parsed_content("network")
    assert network.ehr_group_sizes == sizes and network.ehr_tokenizer.weight.shape[0] == slots
    train_csv = pd.read_csv(tmp_path / "data" / "phantoms" / "train.csv")
    assert train_csv["Lactate"].notna().mean() > 0.8 and train_csv["Lactate"].dropna().between(7.5, 22.6).all()
    statistics = EHRStatistics.load(training.parser.get_parsed_content("ehr_statistics_file"))
    assert statistics.mean["Lactate"] == pytest.approx(train_csv["Lactate"].median())
    item = training.parser.get_parsed_content("train#dataset")[0]
    record = training.parser.get_parsed_content("train#records")[0]
    assert not np.isnan(record["Lactate"])
    slot = ehr_slot_names(["demographics", "measurements"]).index("Lactate")
    assert item["ehr"].shape == (slots,) and float(item["ehr_missing"][slot]) == 0.0
    np.testing.assert_allclose(
        float(item["ehr"][slot]), statistics.standardise("Lactate", record["Lactate"]), rtol=1e-6
    )

    run_workflow("inference.json", "inference", scoring_overrides(tmp_path, ieca_mode="pooled"))
    scores = pd.read_csv(tmp_path / "outputs" / "diff3m_pooled" / "scores.csv")
    assert len(scores) == PHANTOMS["num_test"] and scores["anomaly_score"].notna().all()
    given = scores["Lactate"].notna()  # the phantoms leave 5 % of the measurements empty, as real records do
    assert given.sum() == pd.read_csv(tmp_path / "data" / "phantoms" / "test.csv")["Lactate"].notna().sum() > 0
    assert (
        scores.loc[given, "attention[Lactate]"].between(0.0, 1.0).all()
        and scores.loc[~given, "attention[Lactate]"].isna().all()
    )

    monkeypatch.undo()  # the table without the field: the model trained with it is refused, by name
    refusal = f"{re.escape(f'trained with {sizes} EHR tokens')}.*{re.escape(f'encodes {[demographics, measurements]}')}"
    with pytest.raises(CheckpointSettingError, match=refusal):
        network_for_checkpoint(tmp_path / "models" / "diff3m_pooled_best.pt")
