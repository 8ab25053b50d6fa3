"""DICOM ``PatientAge`` strings as scanners actually write them, including the unpadded ones the standard forbids."""

from __future__ import annotations

import pytest

from monai_diff3m.data.dicom import DicomTagError, parse_dicom_age


@pytest.mark.parametrize("value, years", [("34M", 34 / 12), ("5Y", 5.0), ("0Y", 0.0)])
def test_unpadded_age_strings_are_read(value, years):
    assert parse_dicom_age(value) == pytest.approx(years)


@pytest.mark.parametrize("value", ["nan", "121Y", "-0Y"])
def test_nan_and_out_of_range_ages_are_rejected(value):
    with pytest.raises(DicomTagError, match="PatientAge"):
        parse_dicom_age(value)
