"""CheXpert -> ``train.csv`` (normals only), ``valid.csv``, ``test.csv`` with a seeded patient-level split.

CheXpert's own ``valid.csv`` has only 200 patients, too few to both select a model and report results, so both
official tables are pooled and re-split by patient. ``--chexpert-root`` is the ``CheXpert-v1.0`` or
``CheXpert-v1.0-small`` folder (the one holding ``train.csv``); output paths start with that folder's name, so
the bundles' dataset root is its parent, whatever the folder was renamed to.

Usage::

    python -m monai_diff3m.preprocessing.chexpert --chexpert-root /data/CheXpert-v1.0-small --output /data/chexpert_csv
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m import schema

from .common import (
    InputTableError,
    canonical_values,
    exit_on_input_error,
    line_number,
    one_row_per_key,
    progress,
    read_table,
    shown,
)
from .labels import LABEL_COLUMNS, UNCERTAIN_POLICIES, normal_label
from .splits import SPLIT, patient_split, split_frames, write_splits
from .summary import format_summary, save_summary, summarise

__all__ = ["OFFICIAL_TABLES", "read_chexpert", "prepare_chexpert", "build_parser", "main"]

#: The official CheXpert tables that are pooled before the patient-level split.
OFFICIAL_TABLES = ("train.csv", "valid.csv")
_INPUT_COLUMNS = (schema.PATH, schema.SEX, schema.AGE, schema.FRONTAL_LATERAL, schema.VIEW, *LABEL_COLUMNS)
#: ``[<dataset folder>/]<train|valid>/<patientNNNNN>/<study>/<view>.jpg`` (the folder prefix is absent in some
#: redistributions): group 1 is the path below the dataset folder, group 2 the patient.
_PATH_PATTERN = r"^(?:[^/]+/)?([^/]+/(patient\d+)/[^/]+/[^/]+)$"
#: Private column: the file and line each row was read from, for the messages about repeated images.
_ORIGIN = "_origin"


def _read_official_table(path: Path, root_name: str, uncertain_policy: str) -> pd.DataFrame:
    """Read one official table, derive patient and label, and re-root paths at ``root_name``.

    Sex, view and ``Frontal/Lateral`` are read as the bundle reads them (``M``, `` female ``, ``frontal``,
    ``AP Supine``) and written in its spelling. A sex or ``Frontal/Lateral`` value that the bundle refuses stops the
    run naming the line; a view that is not AP/PA (``LL``, ``RL``, an unknown code) is left for the filter to count.
    """
    table = read_table(path, _INPUT_COLUMNS, dtype={schema.PATH: str})
    parts = table[schema.PATH].str.extract(_PATH_PATTERN)
    unmatched = parts[1].isna()
    if unmatched.any():
        raise InputTableError(
            f"{path}: column {schema.PATH!r} must look like 'CheXpert-v1.0/train/patient00001/study1/view1.jpg'; "
            f"found {shown(table[schema.PATH][unmatched].iloc[0])}"
        )
    ages = pd.to_numeric(table[schema.AGE], errors="coerce")
    if ages.isna().any():
        raise InputTableError(
            f"{path}: column {schema.AGE!r} must be a number in every row; "
            f"found {shown(table[schema.AGE][ages.isna()].iloc[0])}"
        )
    return pd.DataFrame(
        {
            schema.PATH: root_name + "/" + parts[0],
            schema.PATIENT_ID: parts[1],
            schema.SEX: canonical_values(table[schema.SEX], schema.canonical_sex, path, schema.SEX),
            schema.AGE: ages,
            schema.FRONTAL_LATERAL: canonical_values(
                table[schema.FRONTAL_LATERAL], schema.canonical_frontal_lateral, path, schema.FRONTAL_LATERAL
            ),
            schema.VIEW: canonical_values(table[schema.VIEW], schema.canonical_view, path, schema.VIEW, refuse=False),
            schema.NO_FINDING: normal_label(table, uncertain_policy, path),
            _ORIGIN: [f"{path.name} line {line_number(table[schema.PATH], row)}" for row in range(len(table))],
        }
    )


def read_chexpert(chexpert_root: Path, uncertain_policy: str = "abnormal") -> tuple[pd.DataFrame, dict[str, int]]:
    """Pool the official tables and keep frontal AP/PA images of known sex with a label under the policy.

    An image listed twice is kept once when both rows are identical (counted as ``dropped_repeated_rows``, logged)
    and stops the run naming both rows when they differ.

    Returns:
        the kept rows (schema columns) and the number of rows each filter removed.
    """
    root = Path(chexpert_root)
    frame = pd.concat(
        [_read_official_table(root / name, root.name, uncertain_policy) for name in OFFICIAL_TABLES],
        ignore_index=True,
    )
    rows_read = len(frame)
    origins = frame.pop(_ORIGIN)
    frame = one_row_per_key(frame, schema.PATH, origins, f"{root}/{{{','.join(OFFICIAL_TABLES)}}}", "chexpert")
    filters = {
        "lateral": frame[schema.FRONTAL_LATERAL] != schema.FRONTAL,
        "view_not_ap_pa": ~frame[schema.VIEW].isin(schema.VIEW_VALUES),
        "sex_unknown": ~frame[schema.SEX].isin(schema.SEX_VALUES),
        "uncertain_excluded": frame[schema.NO_FINDING].isna(),
    }
    counts: dict[str, int] = {"rows_read": rows_read, "dropped_repeated_rows": rows_read - len(frame)}
    keep = pd.Series(True, index=frame.index)
    for name, drop in filters.items():
        counts[f"dropped_{name}"] = int((keep & drop).sum())
        keep &= ~drop
    return frame[keep].reset_index(drop=True), counts


def prepare_chexpert(
    chexpert_root: Path,
    output_dir: Path,
    uncertain_policy: str = "abnormal",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``train.csv``, ``valid.csv``, ``test.csv`` and ``summary.json`` into ``output_dir``.

    Args:
        chexpert_root: folder holding CheXpert's ``train.csv`` and ``valid.csv``.
        output_dir: folder for the outputs (created if needed).
        uncertain_policy: one of :data:`preprocessing.labels.UNCERTAIN_POLICIES`.
        valid_fraction: share of patients for validation.
        test_fraction: share of patients for test.
        seed: seed of the patient shuffle.

    Returns:
        the summary that was printed and saved.
    """
    frame, counts = read_chexpert(chexpert_root, uncertain_policy)
    if frame.empty:
        dropped = ", ".join(
            f"{name.removeprefix('dropped_')} {n}" for name, n in counts.items() if n and name != "rows_read"
        )
        raise InputTableError(
            f"{chexpert_root}: no frontal AP/PA image of known sex is left of {counts['rows_read']} rows "
            f"(dropped: {dropped})"
        )
    progress(f"chexpert: {len(frame)} frontal AP/PA images of {frame[schema.PATIENT_ID].nunique()} patients kept")
    frame[SPLIT] = patient_split(frame[schema.PATIENT_ID], valid_fraction, test_fraction, seed)
    parts = split_frames(frame)
    write_splits(parts, output_dir)
    settings = {
        "uncertain_policy": uncertain_policy,
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    summary = summarise(parts, extra={**counts, **settings})
    save_summary(summary, output_dir)
    print(format_summary(summary))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chexpert-root", type=Path, required=True, help="folder with CheXpert train.csv, valid.csv")
    parser.add_argument("--output", type=Path, required=True, help="folder for train/valid/test CSVs")
    parser.add_argument(
        "--uncertain-policy",
        choices=UNCERTAIN_POLICIES,
        default="abnormal",
        help="label of studies whose only findings are uncertain (-1); default: reference rule",
    )
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="share of patients for validation")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of patients for test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_input_error():
        prepare_chexpert(
            args.chexpert_root, args.output, args.uncertain_policy, args.valid_fraction, args.test_fraction, args.seed
        )


if __name__ == "__main__":
    main()
