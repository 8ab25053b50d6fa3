"""Patient-level splits and the three output CSVs every pipeline writes.

Splitting by image would put studies of one patient into both training and test, and the model would be scored
on anatomy it has memorised; every split here is therefore by patient. The training CSV holds normals only
because the diffusion model learns the normal distribution; validation and test keep both classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic

__all__ = [
    "SPLIT",
    "TRAIN",
    "VALID",
    "TEST",
    "SPLITS",
    "OUTPUT_COLUMNS",
    "patient_split",
    "split_frames",
    "write_splits",
]

#: Intermediate column holding the split of each row (not part of the bundle schema).
SPLIT = "split"
TRAIN, VALID, TEST = "train", "valid", "test"
#: Split names; each is written to ``<name>.csv``.
SPLITS = (TRAIN, VALID, TEST)
#: Columns of every output CSV, in order; MIMIC appends ``schema.MIMIC_EHR_COLUMNS``.
OUTPUT_COLUMNS = schema.CSV_COLUMNS


def patient_split(patients: pd.Series, valid_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Assign every row the split of its patient; patients are shuffled with ``seed`` and cut by fraction.

    The same patients and seed always give the same split, whatever the row order.

    Args:
        patients: patient identifier per row.
        valid_fraction: share of patients in the validation split.
        test_fraction: share of patients in the test split; the rest is training.
        seed: seed of the shuffle.
    """
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions must be >= 0 and leave patients for training; got valid={valid_fraction}, "
            f"test={test_fraction}"
        )
    unique = np.sort(patients.unique())
    shuffled = unique[np.random.default_rng(seed).permutation(len(unique))]
    n_test = int(round(len(unique) * test_fraction))
    n_valid = int(round(len(unique) * valid_fraction))
    assignment = np.full(len(unique), TRAIN, dtype=object)
    assignment[:n_test] = TEST
    assignment[n_test : n_test + n_valid] = VALID
    return patients.map(pd.Series(assignment, index=shuffled)).rename(SPLIT)


def split_frames(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Cut ``frame`` by its :data:`SPLIT` column into the three output tables, keeping only normals for training.

    Rows are sorted by path so that reruns produce byte-identical files.

    Raises:
        ValueError: a split would be empty (the bundle cannot train or validate on an empty CSV).
    """
    parts = {name: frame[frame[SPLIT] == name].sort_values(schema.PATH) for name in SPLITS}
    parts[TRAIN] = parts[TRAIN][parts[TRAIN][schema.NO_FINDING] == 1.0]
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise ValueError(
            f"split(s) {empty} would be empty (training keeps normals only); {len(frame)} rows in total. "
            "Check the input tables, the filters and the split fractions"
        )
    return parts


def write_splits(
    parts: dict[str, pd.DataFrame], output_dir: Path, columns: tuple[str, ...] = OUTPUT_COLUMNS
) -> dict[str, Path]:
    """Write each table of :func:`split_frames` to ``output_dir/<split>.csv`` atomically, with ``columns`` only."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return {name: write_csv_atomic(part[list(columns)], output_dir / f"{name}.csv") for name, part in parts.items()}
