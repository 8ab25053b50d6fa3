"""At inference a record with a malformed EHR value is reported and skipped; the other records are still scored."""

from __future__ import annotations

import pytest

from monai_diff3m import schema
from monai_diff3m.data.records import transform_or_report
from monai_diff3m.transforms import EHRStatistics, EncodeEHRd

ENCODER = EncodeEHRd(statistics=EHRStatistics({}, {}), required=[], allow_missing_keys=True)
GOOD = {
    "image": "a.png",
    "source": "ehr.csv row 2",
    schema.AGE: 60,
    schema.SEX: "Male",
    schema.VIEW: "PA",
    schema.BMI: 24.0,
}


def test_string_in_a_numeric_column_becomes_a_failure_row():
    bad = {**GOOD, "image": "b.png", "source": "ehr.csv row 3", schema.BMI: "high"}
    items, failures = transform_or_report([GOOD, bad], ENCODER)
    assert [item["image"] for item in items] == ["a.png"]
    assert failures == [("b.png", "EHRValueError: ehr.csv row 3: field 'BMI' must be a number, got 'high'")]


def test_every_record_failing_is_an_error_not_an_empty_result():
    with pytest.raises(ValueError, match="every one of the 1 input"):
        transform_or_report([{**GOOD, schema.WEIGHT: "heavy"}], ENCODER)
