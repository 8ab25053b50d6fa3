"""Seeded patient-level splits of one labelled CheXpert-style CSV into train (normals only), validation and test.

Chest X-ray datasets hold several films of one patient (NIH follow-ups, CheXpert studies, MIMIC admissions); a split
by image puts the same anatomy on both sides and inflates every figure, so every split here is by patient.
Patients are assigned whole, largest first, each to the split that brings the image counts closest to their targets,
per class: normal films go ``1 - valid - test`` / ``valid`` / ``test``, abnormal films go to validation and test
only, in the same valid:test ratio. A patient's abnormal films in the training split cannot be used (training keeps
normals only), so the assignment avoids putting abnormal films there. The seed orders patients of equal size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)
#: Columns that identify a patient, in the order they are looked for (the schema's, NIH's, MIMIC's).
PATIENT_COLUMNS = (schema.PATIENT_ID, "Patient ID", "subject_id")
#: CheXpert (``.../patient00001/study1/...``) and MIMIC (``files/p10/p10000032/s5.../...``) name the patient in the
#: path.
_PATH_PATIENT = re.compile(r"(?:^|/)(patient\d+|p\d{8})(?:/|$)")


class SplitError(ValueError):
    """The dataset cannot be split by patient as asked; the message names the CSV and what is missing."""


def patient_ids(table: pd.DataFrame, source: str = "dataset CSV", column: str | None = None) -> pd.Series:
    """The patient of every row: ``column`` if given, else the first of :data:`PATIENT_COLUMNS`, else the path.

    Raises:
        SplitError: no patient column and paths that do not name a patient, or an empty patient cell.
    """
    candidates = [column] if column else [name for name in PATIENT_COLUMNS if name in table.columns]
    if column and column not in table.columns:
        raise SplitError(f"{source}: patient column {column!r} not found; columns are {list(table.columns)}")
    if candidates:
        ids = table[candidates[0]]
        empty = ids.isna() | (ids.astype(str).str.strip() == "")
        if empty.any():
            raise SplitError(
                f"{source}: column {candidates[0]!r} is empty in row(s) {(np.flatnonzero(empty) + 2)[:5].tolist()}"
            )
        return ids.astype(str).str.strip()
    from_path = table[schema.PATH].astype(str).str.extract(_PATH_PATIENT, expand=False)
    if from_path.isna().any():
        example = table[schema.PATH][from_path.isna()].iloc[0]
        raise SplitError(
            f"{source}: cannot tell patients apart: no column of {list(PATIENT_COLUMNS)} and path {example!r} names no "
            "CheXpert 'patientNNNNN' or MIMIC 'pNNNNNNNN' folder; add a patient column (or pass its name)"
        )
    return from_path


def split_by_patient(
    table: pd.DataFrame,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.3,
    seed: int = 0,
    source: str = "dataset CSV",
    patient_column: str | None = None,
) -> pd.Series:
    """The split (``train``/``valid``/``test``) of every row, whole patients at a time (see the module docstring).

    Args:
        table: one row per film with ``Path`` and ``No Finding`` (1 normal, 0 or blank abnormal).
        valid_fraction: share of the normal films for validation (and of the abnormal films, with ``test_fraction``).
        test_fraction: share of the normal films for test.
        seed: orders patients of equal film count; the same table and seed always give the same split.
        source: how to name the table in errors.
        patient_column: the patient column, if not one of :data:`PATIENT_COLUMNS`.
    """
    if valid_fraction <= 0 or test_fraction <= 0 or valid_fraction + test_fraction >= 1:
        raise SplitError(
            "split fractions must be > 0 and leave normals for training; "
            f"got valid={valid_fraction}, test={test_fraction}"
        )
    patients = patient_ids(table, source, patient_column)
    abnormal = table[schema.NO_FINDING].map(schema.anomaly_label).to_numpy()
    counts = (
        pd.DataFrame({"patient": patients.to_numpy(), "normal": 1 - abnormal, "abnormal": abnormal})
        .groupby("patient")
        .sum()
    )
    if counts["normal"].sum() == 0 or counts["abnormal"].sum() == 0:
        raise SplitError(f"{source}: needs normal ('{schema.NO_FINDING}' = 1) and abnormal films; found only one class")
    order = np.random.default_rng(seed).permutation(len(counts))
    counts = counts.iloc[order]
    counts = counts.iloc[np.argsort(-(counts["normal"] + counts["abnormal"]).to_numpy(), kind="stable")]

    abnormal_valid = valid_fraction / (valid_fraction + test_fraction)
    targets = np.array(
        [
            [1 - valid_fraction - test_fraction, 0.0],
            [valid_fraction, abnormal_valid],
            [test_fraction, 1 - abnormal_valid],
        ]
    )
    totals = counts[["normal", "abnormal"]].sum().to_numpy(dtype=float)
    assigned = np.zeros((len(SPLITS), 2))
    split_of_patient = {}
    for patient, films in zip(counts.index, counts[["normal", "abnormal"]].to_numpy(dtype=float)):
        # the split whose shortfall, relative to the class totals, this patient's films fill best
        costs = [
            np.square((assigned + np.eye(len(SPLITS))[index][:, None] * films) / totals - targets).sum()
            for index in range(len(SPLITS))
        ]
        choice = int(np.argmin(costs))
        assigned[choice] += films
        split_of_patient[patient] = SPLITS[choice]
    return patients.map(split_of_patient).rename("split")


def write_patient_splits(
    csv_path: str | Path,
    output_dir: str | Path,
    valid_fraction: float = 0.2,
    test_fraction: float = 0.3,
    seed: int = 0,
    patient_column: str | None = None,
) -> dict[str, Path]:
    """Split ``csv_path`` by patient and write ``train.csv`` (normals only), ``valid.csv`` and ``test.csv``.

    Rows keep every column and their ``Path`` unchanged, so the split CSVs read with the same image root as the
    original. Returns ``{split: csv path}``.
    """
    csv_path = Path(csv_path)
    try:
        table = pd.read_csv(csv_path, dtype={schema.PATH: str})
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise SplitError(f"cannot read dataset CSV {csv_path}: {error}") from error
    missing = [column for column in (schema.PATH, schema.NO_FINDING) if column not in table.columns]
    if missing:
        raise SplitError(f"dataset CSV {csv_path} lacks column(s) {missing}; found {list(table.columns)}")
    try:
        labels = table[schema.NO_FINDING].map(schema.anomaly_label)
    except ValueError as error:
        raise SplitError(f"dataset CSV {csv_path}: {error}") from error
    split = split_by_patient(table, valid_fraction, test_fraction, seed, str(csv_path), patient_column)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = {
        TRAIN: table[(split == TRAIN) & (labels == 0)],
        VALID: table[split == VALID],
        TEST: table[split == TEST],
    }
    return {name: write_csv_atomic(part, output_dir / f"{name}.csv") for name, part in parts.items()}
