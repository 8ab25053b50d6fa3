"""Pins of the EHR encoding, the fitted statistics and the phantoms' EHR, taken before the field table redesign.

The values are exact (float32 bit patterns as ``float.hex``, CSV text as SHA-256): a change of the field table
that moves any slot, spelling, normaliser or phantom draw of the existing fields fails here. Slots, statistics and
CSV columns are picked by name, so a field added to the table leaves these pins as they are.
"""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monai_diff3m.data.phantoms import ensure_phantom_dataset
from monai_diff3m.transforms import EHRStatistics, EncodeEHRd, ehr_slot_names

NAN = float("nan")
ROWS = [
    {"source": "a", "Age": 67, "Sex": "Female", "AP/PA": "AP", "BMI": 30.0, "Systolic BP": 140,
     "Diastolic BP": 90, "Height": 64.0, "Weight": 175.0},
    {"source": "b", "Age": "23.5", "Sex": " m ", "AP/PA": "pa_erect", "BMI": None, "Systolic BP": "118",
     "Diastolic BP": NAN, "Height": "", "Weight": 212.4},
    {"source": "c", "Age": 0, "Sex": "Unknown", "AP/PA": "AP Supine", "BMI": 17.3, "Systolic BP": 95,
     "Diastolic BP": 61, "Height": 71.2, "Weight": None},
    {"source": "d", "Age": 101, "Sex": "FEMALE", "AP/PA": None, "BMI": 45.9, "Systolic BP": None,
     "Diastolic BP": None, "Height": None, "Weight": None},
]  # fmt: skip
ROBUST = (
    {"BMI": 30.0, "Systolic BP": 118.0, "Diastolic BP": 75.5, "Height": 67.6, "Weight": 193.7},
    {"BMI": 10.6004447739066, "Systolic BP": 16.679021497405486, "Diastolic BP": 10.748702742772425,
     "Height": 2.668643439584884, "Weight": 13.862120088954795},
)  # fmt: skip
PLAIN = (
    {"BMI": 31.066666666666663, "Systolic BP": 117.66666666666667, "Diastolic BP": 75.5, "Height": 67.6,
     "Weight": 193.7},
    {"BMI": 11.700237414495295, "Systolic BP": 18.372685039360892, "Diastolic BP": 14.5, "Height": 3.6000000000000014,
     "Weight": 18.700000000000003},
)  # fmt: skip
_0, _1 = "0x0.0p+0", "0x1.0000000000000p+0"
Z1, Z2, Z3 = "0x1.51ab700000000p+0", "0x1.5958100000000p+0", "-0x1.5958100000000p+0"
MEASURED = [
    ([_0, Z1, Z2, Z3, Z3], [0, 0, 0, 0, 0]),
    ([_0, _0, _0, _0, Z2], [1, 0, 1, 1, 0]),
    (["-0x1.32b4400000000p+0", "-0x1.6104b00000000p+0", Z3, Z2, _0], [0, 0, 0, 0, 1]),
    (["0x1.7ffbe00000000p+0", _0, _0, _0, _0], [0, 1, 1, 1, 1]),
]
DEMOGRAPHICS = [
    (["0x1.570a3e0000000p-1", _0, _1, _1, _0], [0, 0, 0, 0, 0]),
    (["0x1.e147ae0000000p-3", _1, _0, _0, _1], [0, 0, 0, 0, 0]),
    ([_0, _0, _0, _1, _0], [0, 1, 1, 0, 0]),
    (["0x1.028f5c0000000p+0", _0, _1, _0, _0], [0, 0, 0, 1, 1]),
]
AUTHORS_AGE = ["0x1.5555560000000p-1", "0x1.d1745e0000000p-3", "-0x1.4afd6a0000000p-7", "0x1.0295fa0000000p+0"]
PHANTOM_CSVS = {
    "train": "99f447f8f2d690c83356f2f34e64776a18b53c454584c8a7c4ef6e1f887cfef7",
    "valid": "70e5b25f96e8e3216458b9d9df8a6e98101ac335ca3553ed98778463ddd7c870",
    "test": "fa931719cba8fe55e06009355b9d9779b7aa5d7df514d8772b83dbd972c73729",
}


DEMOGRAPHIC_SLOTS = ["Age", "Sex=Male", "Sex=Female", "AP/PA=AP", "AP/PA=PA"]
MEASUREMENT_SLOTS = ["BMI", "Systolic BP", "Diastolic BP", "Height", "Weight"]
PHANTOM_COLUMNS = [
    "Path", "Patient", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", *MEASUREMENT_SLOTS, "Mask", "Lesion"
]  # fmt: skip


def _hex(encoded: dict, groups: list[str], slots: list[str], key: str = "ehr") -> list:
    """The pinned ``slots`` of an encoding of ``groups``: float32 bit patterns, or the missing flags."""
    vector = encoded[key]
    assert vector.dtype == np.float32
    names = ehr_slot_names(groups)
    picked = [vector[names.index(slot)] for slot in slots]
    return [float(value).hex() for value in picked] if key == "ehr" else [int(value) for value in picked]


def _pinned(statistics: EHRStatistics) -> tuple[dict, dict]:
    return tuple({column: table[column] for column in MEASUREMENT_SLOTS} for table in (statistics.mean, statistics.std))


def test_statistics_are_pinned():
    assert _pinned(EHRStatistics.fit(ROWS)) == ROBUST
    assert _pinned(EHRStatistics.fit(ROWS, robust=False)) == PLAIN


@pytest.mark.parametrize("row", range(len(ROWS)))
def test_encoded_vectors_are_pinned_bit_for_bit(row):
    statistics = EHRStatistics.fit(ROWS)
    everything, slots = ["demographics", "measurements"], DEMOGRAPHIC_SLOTS + MEASUREMENT_SLOTS
    both = EncodeEHRd(statistics=statistics, required=[], allow_missing_keys=True)(ROWS[row])
    demographics = EncodeEHRd(groups=["demographics"], required=[], age_range=(1.0, 100.0), allow_missing_keys=True)
    measurements = EncodeEHRd(["measurements"], statistics, required=[], allow_missing_keys=True)(ROWS[row])

    assert _hex(both, everything, slots) == DEMOGRAPHICS[row][0] + MEASURED[row][0]
    assert _hex(both, everything, slots, "ehr_missing") == DEMOGRAPHICS[row][1] + MEASURED[row][1]
    assert _hex(demographics(ROWS[row]), ["demographics"], DEMOGRAPHIC_SLOTS) == [
        AUTHORS_AGE[row],
        *DEMOGRAPHICS[row][0][1:],
    ]
    assert _hex(measurements, ["measurements"], MEASUREMENT_SLOTS) == MEASURED[row][0]
    assert _hex(measurements, ["measurements"], MEASUREMENT_SLOTS, "ehr_missing") == MEASURED[row][1]


def test_phantom_ehr_csvs_are_pinned(tmp_path):
    csvs = ensure_phantom_dataset(tmp_path, num_train=6, num_val=4, num_test=4, image_size=32, missing_fraction=0.3)
    texts = {
        split: pd.read_csv(path, dtype=str, keep_default_na=False)[PHANTOM_COLUMNS].to_csv(
            index=False, lineterminator="\n"
        )
        for split, path in csvs.items()
    }
    if list(pd.read_csv(csvs["train"], nrows=0).columns) == PHANTOM_COLUMNS:  # the built-in table: the file itself
        assert texts == {split: Path(path).read_text(encoding="utf-8") for split, path in csvs.items()}
    assert {split: hashlib.sha256(text.encode()).hexdigest() for split, text in texts.items()} == PHANTOM_CSVS
