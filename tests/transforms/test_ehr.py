import json

import numpy as np
import pytest

from monai_diff3m import schema
from monai_diff3m.transforms import (
    EHRStatistics,
    EHRStatisticsError,
    EHRValueError,
    EncodeEHRd,
    ehr_group_sizes,
    ehr_slot_names,
)

RECORD = {
    "source": "train.csv row 2",
    schema.AGE: 67,
    schema.SEX: "Female",
    schema.VIEW: "AP",
    schema.BMI: 30.0,
    schema.SYSTOLIC: 140.0,
    schema.DIASTOLIC: 90.0,
    schema.HEIGHT: 64.0,
    schema.WEIGHT: 175.0,
}
BUILT_IN = (
    schema.AGE,
    schema.SEX,
    schema.VIEW,
    schema.BMI,
    schema.SYSTOLIC,
    schema.DIASTOLIC,
    schema.HEIGHT,
    schema.WEIGHT,
)


@pytest.fixture(autouse=True)
def built_in_fields(monkeypatch):
    """These tests encode records of the eight built-in fields: a field added to the table is not theirs to test."""
    monkeypatch.setattr(schema, "EHR_FIELDS", tuple(schema.ehr_field(name) for name in BUILT_IN))


STATS = EHRStatistics(
    mean={schema.BMI: 25.0, schema.SYSTOLIC: 120.0, schema.DIASTOLIC: 80.0, schema.HEIGHT: 66.0, schema.WEIGHT: 170.0},
    std={schema.BMI: 5.0, schema.SYSTOLIC: 10.0, schema.DIASTOLIC: 10.0, schema.HEIGHT: 2.0, schema.WEIGHT: 25.0},
)


def test_slot_layout_is_one_token_per_scalar():
    assert ehr_slot_names(["demographics"]) == ["Age", "Sex=Male", "Sex=Female", "AP/PA=AP", "AP/PA=PA"]
    assert ehr_group_sizes(["demographics", "measurements"]) == [5, 5]
    with pytest.raises(ValueError, match="EHR groups"):
        ehr_group_sizes(["labs"])


def test_encoding_values():
    out = EncodeEHRd(statistics=STATS)(RECORD)
    np.testing.assert_allclose(out["ehr"], [0.67, 0, 1, 1, 0, 1.0, 2.0, 1.0, -1.0, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(out["ehr_missing"], np.zeros(10))
    assert out["ehr"].dtype == np.float32
    assert "ehr" not in RECORD


def test_age_range_switch_gives_the_authors_age_encoding():
    """The authors' loader: (age - min_age)/(max_age - min_age) with 1 and 100, so 67 years -> 66/99."""
    authors = EncodeEHRd(groups=["demographics"], age_range=(1.0, 100.0))({**RECORD, schema.AGE: 67})
    assert authors["ehr"][0] == pytest.approx(66 / 99)
    assert EncodeEHRd(groups=["demographics"], age_range=(1.0, 100.0))({**RECORD, schema.AGE: 1})["ehr"][0] == 0.0
    assert EncodeEHRd(groups=["demographics"])({**RECORD, schema.AGE: 67})["ehr"][0] == pytest.approx(0.67)
    with pytest.raises(ValueError, match="age_range"):
        EncodeEHRd(groups=["demographics"], age_range=(100.0, 1.0))


def test_missing_values_are_flagged_not_dropped():
    record = {**RECORD, schema.BMI: float("nan"), schema.SEX: None}
    out = EncodeEHRd(statistics=STATS, required=[schema.AGE, schema.VIEW])(record)
    np.testing.assert_array_equal(out["ehr_missing"], [0, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    assert out["ehr"][5] == 0.0


@pytest.mark.parametrize(
    "field, value, message",
    [
        (schema.AGE, float("nan"), "required EHR field 'Age' is missing"),
        (schema.AGE, 150, r"Age 150 is outside the plausible range \[0, 120\] years"),
        (schema.AGE, "abc", "must be a number"),
        (schema.SEX, "X", "field 'Sex' 'X' is not a sex"),
        (schema.VIEW, "LL", "lateral views are not supported"),
        (schema.VIEW, "OBL", "not a frontal view"),
        (schema.BMI, "high", "'BMI' must be a number"),
        (schema.WEIGHT, -3, r"Weight -3 is outside the plausible range \[1, 1500\] lbs"),
        (schema.BMI, 2500, r"'BMI': BMI 2500 is outside the plausible range \[5, 150\] kg/m2"),
        (schema.HEIGHT, 1e9, r"'Height': Height 1e\+09 is outside the plausible range \[10, 110\] inches"),
        (schema.SYSTOLIC, 1200, r"Systolic BP 1200 is outside"),
        (schema.DIASTOLIC, 0, r"Diastolic BP 0 is outside"),
    ],
)
def test_bad_values_name_record_and_field(field, value, message):
    with pytest.raises(EHRValueError, match=message) as error:
        EncodeEHRd(statistics=STATS)({**RECORD, field: value})
    assert "train.csv row 2" in str(error.value)


def test_statistics_fit_on_training_records_ignore_missing_and_round_trip(tmp_path):
    records = [{schema.BMI: 20.0}, {schema.BMI: 30.0}, {schema.BMI: None}]
    stats = EHRStatistics.fit(records, columns=[schema.BMI], robust=False)
    assert stats.mean[schema.BMI] == 25.0 and stats.std[schema.BMI] == 5.0
    path = tmp_path / "stats.json"
    stats.save(path)
    assert json.loads(path.read_text())["mean"][schema.BMI] == 25.0
    assert EHRStatistics.load(path).standardise(schema.BMI, 35.0) == 2.0


def test_one_typo_in_the_training_split_cannot_move_the_statistics():
    """Height 1e9 in one row made the saved mean 21,276,660, after which every correct height encoded alike."""
    heights = [60.0 + (index % 21) for index in range(100)]
    clean = EHRStatistics.fit([{schema.HEIGHT: height} for height in heights], columns=[schema.HEIGHT])
    for typo in (1e9, 700.0, 108.0):  # implausible, implausible, plausible but extreme
        fitted = EHRStatistics.fit(
            [{schema.HEIGHT: height} for height in [*heights[:-1], typo]], columns=[schema.HEIGHT]
        )
        assert abs(fitted.mean[schema.HEIGHT] - clean.mean[schema.HEIGHT]) <= 0.5
        assert abs(fitted.std[schema.HEIGHT] / clean.std[schema.HEIGHT] - 1.0) < 0.1
    encoded = [fitted.standardise(schema.HEIGHT, height) for height in (60.0, 70.0, 80.0)]
    assert encoded[0] < -1.0 < 0.0 < encoded[2] and abs(encoded[1]) < 0.1


def test_measurements_need_statistics():
    with pytest.raises(ValueError, match="statistics"):
        EncodeEHRd(groups=["demographics", "measurements"])
    assert EncodeEHRd(groups=["demographics"])(RECORD)["ehr"].shape == (5,)


@pytest.mark.parametrize("sex, view", [("M", "ap"), (" male ", "AP Supine"), ("MALE", " AP_ERECT ")])
def test_sex_and_view_spellings_encode_like_the_schema_values(sex, view):
    """CSV readers rejected ``M`` and lower case while the DICOM reader accepted them: one vocabulary now."""
    expected = EncodeEHRd(statistics=STATS)({**RECORD, schema.SEX: "Male", schema.VIEW: "AP"})["ehr"]
    np.testing.assert_array_equal(
        EncodeEHRd(statistics=STATS)({**RECORD, schema.SEX: sex, schema.VIEW: view})["ehr"], expected
    )


def test_unknown_or_other_sex_is_missing_not_an_error():
    out = EncodeEHRd(statistics=STATS, required=[])({**RECORD, schema.SEX: "Unknown"})
    np.testing.assert_array_equal(out["ehr_missing"][1:3], [1, 1])


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"mean": {"BMI": 25.0}}', "lacks the 'mean' and 'std' tables"),
        ('{"mean": {"BMI": 25.0}, "std": {"BMI": 0.0}}', r"has std\['BMI'\] = 0.0, expected a positive number"),
        ('{"mean": {"BMI": "x"}, "std": {"BMI": 1.0}}', r"has mean\['BMI'\] = 'x', expected a finite number"),
    ],
)
def test_corrupt_statistics_file_is_named(tmp_path, content, message):
    """A damaged statistics JSON raised JSONDecodeError or KeyError: 'mean' without the file name."""
    path = tmp_path / "ehr_statistics_spatial.json"
    path.write_text(content)
    with pytest.raises(EHRStatisticsError, match=rf"ehr_statistics_spatial\.json {message}"):
        EncodeEHRd(statistics=path)


def test_demographics_only_model_needs_no_statistics_file(tmp_path):
    """Demographics are not z-scored, so a damaged or missing statistics file must not stop their encoding."""
    (tmp_path / "broken.json").write_text("{not json")
    for statistics in (tmp_path / "broken.json", tmp_path / "absent.json"):
        assert EncodeEHRd(groups=["demographics"], statistics=statistics)(RECORD)["ehr"].shape == (5,)


def test_missing_ehr_fractions_and_the_training_warning(caplog):
    from monai_diff3m.transforms import missing_ehr_fractions, warn_missing_ehr

    records = [
        {schema.AGE: None, schema.SEX: "Male", schema.VIEW: "AP"},
        {schema.AGE: float("nan"), schema.SEX: "", schema.VIEW: "PA"},
    ]
    assert missing_ehr_fractions(records, ["demographics"]) == {schema.AGE: 1.0, schema.SEX: 0.5, schema.VIEW: 0.0}
    with caplog.at_level("INFO"):
        warn_missing_ehr(records, ["demographics"], "spatial")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "'Age' is missing for all 2 training films" in warnings[0]
    assert any("'Sex' is missing for 50.0 %" in record.getMessage() for record in caplog.records)
    caplog.clear()
    warn_missing_ehr(records, ["demographics"], "none")
    assert not caplog.records


def test_training_encoder_of_the_bundle_treats_absent_demographics_as_missing():
    """train.json's encoder, as configured: no field is required and absent columns are missing values."""
    encoder = EncodeEHRd(
        groups=["demographics", "measurements"], statistics=STATS, required=[], allow_missing_keys=True
    )
    out = encoder({"source": "zhanglab row 2", schema.AGE: None, schema.SEX: None, schema.VIEW: "AP"})
    np.testing.assert_array_equal(out["ehr_missing"], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1])
