r"""Step 3: one row per frontal (AP/PA) image with path, patient, sex, age, view, label, split and EHR.

Joins ``mimic-cxr-2.0.0-metadata`` (images) with ``-chexpert`` (labels, keyed on subject and study), ``-split``
(the official patient-level split, keyed on ``dicom_id``), MIMIC-IV ``hosp/patients`` (gender, age) and step 2's
``image_ehr.csv``. Images without a label, a split entry or a patient row are dropped and counted. Every join is
one image to at most one row: a key that ``-split`` or ``patients`` lists twice is kept once when the rows are
identical (counted in the log) and stops the run naming both lines when they differ (two ages or two splits for
one image have no right answer). ``gender`` and ``ViewPosition`` are read as the bundle reads sex and view
(``schema.canonical_sex``, ``schema.canonical_view``: ``pa`` and ``AP SUPINE`` are frontal, ``LL`` and ``AP LLD``
are not).

Age: ``age="study"`` (default) is the age at the study, ``anchor_age + (study year - anchor_year)``; MIMIC shifts
all dates of a patient by the same offset, so the difference of shifted years is the true one. ``age="anchor"``
uses ``anchor_age`` as the reference implementation does.

Usage::

    python -m monai_diff3m.preprocessing.mimic.step3_join --mimic-cxr /data/mimic-cxr-jpg/2.0.0 \
        --mimic-iv /data/mimiciv/3.1 --work-dir /data/mimic_work
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_csv_atomic

from ..common import (
    InputTableError,
    canonical_values,
    day_numbers,
    exit_on_input_error,
    line_number,
    one_row_per_key,
    progress,
    read_table,
    shown,
)
from ..labels import LABEL_COLUMNS, SUPPORT_DEVICES, UNCERTAIN_POLICIES, has_support_devices, normal_label
from ..splits import OUTPUT_COLUMNS, SPLIT
from . import layout
from .step2_concatenate import IMAGE_EHR_COLUMNS

__all__ = ["AGE_POLICIES", "JOINED_COLUMNS", "run", "add_arguments", "main"]

AGE_POLICIES = ("study", "anchor")
#: Columns of ``joined.csv`` and ``existing.csv``.
JOINED_COLUMNS = (*OUTPUT_COLUMNS, *schema.MIMIC_EHR_COLUMNS, SUPPORT_DEVICES, SPLIT)
_STUDY_YEAR = "study_year"


def _check_values(frame: pd.DataFrame, column: str, allowed: Collection[str], path: Path) -> None:
    bad = ~frame[column].isin(list(allowed))
    if bad.any():
        raise InputTableError(
            f"{path}: column {column!r} must be one of {sorted(allowed)}; found {shown(frame[column][bad].iloc[0])}"
        )


def _read_frontal_images(path: Path) -> pd.DataFrame:
    images = read_table(
        path,
        (layout.DICOM_ID, layout.SUBJECT_ID, layout.STUDY_ID, layout.VIEW_POSITION, layout.STUDY_DATE),
        integer_columns=(layout.SUBJECT_ID, layout.STUDY_ID),
        dtype={layout.DICOM_ID: str, layout.VIEW_POSITION: str},
    )
    days = day_numbers(images[layout.STUDY_DATE], layout.STUDY_DATE_FORMAT, path, layout.STUDY_DATE)
    images[_STUDY_YEAR] = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    images[layout.VIEW_POSITION] = canonical_values(
        images[layout.VIEW_POSITION], schema.canonical_view, path, layout.VIEW_POSITION, refuse=False
    )
    frontal = images[images[layout.VIEW_POSITION].notna()]
    progress(f"step3: {len(frontal):,} of {len(images):,} images are frontal AP/PA ({path.name})")
    return frontal


def _read_labels(path: Path, uncertain_policy: str) -> pd.DataFrame:
    keys = [layout.SUBJECT_ID, layout.STUDY_ID]
    table = read_table(path, (*keys, *LABEL_COLUMNS), integer_columns=keys)
    duplicated = table.duplicated(keys)
    if duplicated.any():
        raise InputTableError(
            f"{path}: columns {keys} must identify one study per row; "
            f"{table.loc[duplicated, keys].iloc[0].tolist()} appears twice"
        )
    return pd.concat([table[keys], normal_label(table, uncertain_policy, path), has_support_devices(table)], axis=1)


def _one_row_per_key(table: pd.DataFrame, key: str, path: Path) -> pd.DataFrame:
    origins = pd.Series([f"line {line_number(table[key], position)}" for position in range(len(table))], table.index)
    return one_row_per_key(table, key, origins, str(path), "step3")


def _read_split(path: Path) -> pd.DataFrame:
    table = read_table(path, (layout.DICOM_ID, layout.OFFICIAL_SPLIT), dtype={layout.DICOM_ID: str})
    _check_values(table, layout.OFFICIAL_SPLIT, layout.OFFICIAL_SPLIT_NAMES, path)
    table = _one_row_per_key(table, layout.DICOM_ID, path)
    return pd.DataFrame(
        {layout.DICOM_ID: table[layout.DICOM_ID], SPLIT: table[layout.OFFICIAL_SPLIT].map(layout.OFFICIAL_SPLIT_NAMES)}
    )


def _read_patients(path: Path) -> pd.DataFrame:
    columns = (layout.SUBJECT_ID, layout.GENDER, layout.ANCHOR_AGE, layout.ANCHOR_YEAR)
    table = read_table(path, columns, integer_columns=(layout.SUBJECT_ID, layout.ANCHOR_AGE, layout.ANCHOR_YEAR))
    table = _one_row_per_key(table, layout.SUBJECT_ID, path)
    return table.assign(**{layout.GENDER: canonical_values(table[layout.GENDER], _known_sex, path, layout.GENDER)})


def _known_sex(value: object) -> str:
    """``Male``/``Female`` from any spelling the bundle reads; MIMIC-IV gives every patient one, so none is missing."""
    sex = schema.canonical_sex(value, layout.GENDER)
    if sex is None:
        raise ValueError(f"{layout.GENDER} {value!r} is not M or F (any spelling the bundle reads as Male or Female)")
    return sex


def _count_dropped(before: int, after: pd.DataFrame, reason: str) -> None:
    if before != len(after):
        progress(f"step3: dropped {before - len(after):,} images {reason}")


def run(
    mimic_cxr: Path, mimic_iv: Path, work_dir: Path, uncertain_policy: str = "abnormal", age: str = "study"
) -> Path:
    """Join images, labels, split, patients and step 2's EHR; write and return ``<work>/joined.csv``.

    Args:
        mimic_cxr: MIMIC-CXR-JPG root (metadata, chexpert and split tables).
        mimic_iv: MIMIC-IV root (holding ``hosp/patients.csv.gz``), or its ``hosp`` folder.
        work_dir: folder holding step 2's ``image_ehr.csv``; receives ``joined.csv``.
        uncertain_policy: one of :data:`preprocessing.labels.UNCERTAIN_POLICIES`.
        age: ``"study"`` (age at the study) or ``"anchor"`` (``anchor_age``, as the reference).
    """
    if age not in AGE_POLICIES:
        raise ValueError(f"age must be one of {AGE_POLICIES}, got {age!r}")
    work_dir = Path(work_dir)
    images = _read_frontal_images(layout.mimic_cxr_table(mimic_cxr, layout.METADATA))
    labels_path = layout.mimic_cxr_table(mimic_cxr, layout.LABELS)
    joined = images.merge(
        _read_labels(labels_path, uncertain_policy), on=[layout.SUBJECT_ID, layout.STUDY_ID], validate="many_to_one"
    )
    _count_dropped(len(images), joined, f"without a study in {labels_path.name}")
    count = len(joined)
    joined = joined[joined[schema.NO_FINDING].notna()]
    _count_dropped(count, joined, "whose only findings are uncertain (uncertain policy 'exclude')")
    count, split_path = len(joined), layout.mimic_cxr_table(mimic_cxr, layout.SPLIT_TABLE)
    joined = joined.merge(_read_split(split_path), on=layout.DICOM_ID, validate="many_to_one")
    _count_dropped(count, joined, f"without an entry in {split_path.name}")
    count, patients_path = len(joined), layout.mimic_iv_table(mimic_iv, layout.PATIENTS)
    joined = joined.merge(_read_patients(patients_path), on=layout.SUBJECT_ID, validate="many_to_one")
    _count_dropped(count, joined, f"whose subject is not in {patients_path.name}")
    if joined.empty:
        raise InputTableError(
            f"no frontal AP/PA image of {layout.mimic_cxr_table(mimic_cxr, layout.METADATA)} is left after joining "
            f"{labels_path.name}, {split_path.name} and {patients_path}: the tables describe different images or "
            "subjects (see the counts above)"
        )

    ehr_path = work_dir / layout.IMAGE_EHR
    if not ehr_path.is_file():
        raise FileNotFoundError(f"{ehr_path} not found: run steps 1 and 2 with this work folder first")
    ehr = read_table(ehr_path, IMAGE_EHR_COLUMNS, dtype={layout.DICOM_ID: str})
    uncovered = ~joined[layout.DICOM_ID].isin(ehr[layout.DICOM_ID])
    if uncovered.any():
        raise InputTableError(
            f"{ehr_path}: column {layout.DICOM_ID!r} lacks {int(uncovered.sum())} images of the metadata "
            f"(e.g. {shown(joined[layout.DICOM_ID][uncovered].iloc[0])}); step 1 ran on another metadata file, "
            "rerun steps 1 and 2"
        )
    joined = joined.merge(ehr, on=layout.DICOM_ID, how="left", validate="many_to_one")

    anchor_age = joined[layout.ANCHOR_AGE]
    shift = joined[_STUDY_YEAR] - joined[layout.ANCHOR_YEAR] if age == "study" else 0
    output = pd.DataFrame(
        {
            schema.PATH: layout.image_paths(
                joined[layout.SUBJECT_ID], joined[layout.STUDY_ID], joined[layout.DICOM_ID]
            ),
            schema.PATIENT_ID: joined[layout.SUBJECT_ID],
            schema.SEX: joined[layout.GENDER],
            schema.AGE: (anchor_age + shift).astype(float),
            schema.FRONTAL_LATERAL: schema.FRONTAL,
            schema.VIEW: joined[layout.VIEW_POSITION],
            schema.NO_FINDING: joined[schema.NO_FINDING],
            **{column: joined[column] for column in schema.MIMIC_EHR_COLUMNS},
            SUPPORT_DEVICES: joined[SUPPORT_DEVICES],
            SPLIT: joined[SPLIT],
        }
    )
    path = write_csv_atomic(output[list(JOINED_COLUMNS)], work_dir / layout.JOINED)
    progress(f"step3: {len(output):,} images of {output[schema.PATIENT_ID].nunique():,} patients -> {path}")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Step 3 options, shared with ``run_all``."""
    parser.add_argument(
        "--uncertain-policy",
        choices=UNCERTAIN_POLICIES,
        default="abnormal",
        help="label of studies whose only findings are uncertain (-1); default: reference rule",
    )
    parser.add_argument(
        "--age",
        choices=AGE_POLICIES,
        default="study",
        help="'study': age at the study date; 'anchor': MIMIC-IV anchor_age (reference)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-cxr", type=Path, required=True, help="MIMIC-CXR-JPG 2.0.0 root")
    parser.add_argument("--mimic-iv", type=Path, required=True, help="MIMIC-IV 3.1 root (holding hosp/)")
    parser.add_argument("--work-dir", type=Path, required=True, help="folder holding step 2's image_ehr.csv")
    add_arguments(parser)
    args = parser.parse_args(argv)
    with exit_on_input_error():
        run(args.mimic_cxr, args.mimic_iv, args.work_dir, args.uncertain_policy, args.age)


if __name__ == "__main__":
    main()
