"""From the 14 CheXpert labeler columns to the normal/abnormal label of :mod:`monai_diff3m.schema`.

CheXpert's ``train.csv`` and MIMIC-CXR's ``mimic-cxr-2.0.0-chexpert.csv.gz`` use the same labeler output: each
finding is 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned). The method calls a study normal
when ``No Finding == 1``; what an *uncertain* finding means for "abnormal" is a choice, so it is an explicit policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from monai_diff3m import schema

from .common import InputTableError, shown

__all__ = ["SUPPORT_DEVICES", "FINDINGS", "LABEL_COLUMNS", "UNCERTAIN_POLICIES", "normal_label", "has_support_devices"]

#: Label column for lines, tubes and devices; the labeler does not count it as a finding (``No Finding`` may be 1).
SUPPORT_DEVICES = "Support Devices"
#: The 12 findings of the CheXpert labeler (input dataset column names).
FINDINGS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
)
#: Every labeler column, as it appears in both CheXpert and MIMIC-CXR label files.
LABEL_COLUMNS = (schema.NO_FINDING, *FINDINGS, SUPPORT_DEVICES)

#: How a study that is not ``No Finding == 1`` but whose only findings are uncertain (-1) is labelled:
#: ``abnormal`` keeps the reference rule (normal iff ``No Finding == 1``), ``normal`` reads -1 as 0 (U-Zeros) and
#: ``exclude`` drops such studies from every split (U-Ignore).
UNCERTAIN_POLICIES = ("abnormal", "normal", "exclude")

_POSITIVE, _NEGATIVE, _UNCERTAIN = 1.0, 0.0, -1.0


def _check_values(labels: pd.DataFrame, path: Path) -> None:
    """The labeler only writes 1, 0, -1 or blank; anything else means the wrong file or a shifted column."""
    for column in LABEL_COLUMNS:
        values = pd.to_numeric(labels[column], errors="coerce")
        bad = ~(values.isin((_POSITIVE, _NEGATIVE, _UNCERTAIN)) | labels[column].isna())
        if bad.any():
            first = shown(labels[column][bad].iloc[0])
            raise InputTableError(f"{path}: column {column!r} must hold 1, 0, -1 or blank; found {first}")


def normal_label(labels: pd.DataFrame, policy: str, path: Path) -> pd.Series:
    """Return ``schema.NO_FINDING`` values: 1.0 normal, 0.0 abnormal, NaN for studies the policy excludes.

    Args:
        labels: a frame with every column of :data:`LABEL_COLUMNS` (values 1, 0, -1 or blank).
        policy: one of :data:`UNCERTAIN_POLICIES`.
        path: the label file (for error messages).
    """
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain-label policy must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    _check_values(labels, path)
    findings = labels[list(FINDINGS)].apply(pd.to_numeric)
    no_finding = pd.to_numeric(labels[schema.NO_FINDING])
    normal = (no_finding == _POSITIVE).to_numpy()
    only_uncertain = (
        ~normal
        & ~(findings == _POSITIVE).any(axis=1).to_numpy()
        & ((findings == _UNCERTAIN).any(axis=1) | (no_finding == _UNCERTAIN)).to_numpy()
    )
    label = normal.astype(float)
    if policy == "normal":
        label[only_uncertain] = 1.0
    elif policy == "exclude":
        label[only_uncertain] = np.nan
    return pd.Series(label, index=labels.index, name=schema.NO_FINDING)


def has_support_devices(labels: pd.DataFrame) -> pd.Series:
    """1.0 where the labeler found support devices (value 1), else 0.0, for step 5's counts and its optional
    ``--drop-support-devices`` (the authors keep these studies: they drop only the label column)."""
    return (pd.to_numeric(labels[SUPPORT_DEVICES]) == _POSITIVE).astype(float).rename(SUPPORT_DEVICES)
