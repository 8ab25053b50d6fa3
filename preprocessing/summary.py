"""What a pipeline wrote, in numbers: per-split counts, EHR missingness and EHR distributions.

Users need these numbers to see whether their copy of the data matches the paper's (normals, support devices,
missing EHR), and a JSON copy next to the CSVs records how the CSVs were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m import schema
from monai_diff3m.io import write_json_atomic

__all__ = ["summarise", "format_summary", "save_summary"]

_QUANTILES = (("p05", 0.05), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p95", 0.95))


def _counts(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(frame),
        "patients": int(frame[schema.PATIENT_ID].nunique()),
        "normal": int((frame[schema.NO_FINDING] == 1.0).sum()),
        "abnormal": int((frame[schema.NO_FINDING] != 1.0).sum()),
        "sex": {value: int((frame[schema.SEX] == value).sum()) for value in schema.SEX_VALUES},
        "view": {value: int((frame[schema.VIEW] == value).sum()) for value in schema.VIEW_VALUES},
    }


def _distribution(values: pd.Series) -> dict[str, float | int | None]:
    present = values.dropna()
    if present.empty:
        return {"count": 0}
    stats: dict[str, float | int | None] = {
        "count": len(present),
        "mean": float(present.mean()),
        "std": float(present.std()) if len(present) > 1 else None,
        "min": float(present.min()),
    }
    stats.update({name: float(present.quantile(q)) for name, q in _QUANTILES})
    stats["max"] = float(present.max())
    return stats


def summarise(
    parts: dict[str, pd.DataFrame], ehr_columns: tuple[str, ...] = (), extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summarise the tables written per split.

    Args:
        parts: split name -> the rows written for it.
        ehr_columns: numeric EHR columns whose missingness and distribution to report (over all splits).
        extra: pipeline-specific counts (rows dropped by each filter, ...) stored under ``"pipeline"``.
    """
    written = pd.concat(list(parts.values()), ignore_index=True)
    summary: dict[str, Any] = {
        "pipeline": dict(extra or {}),
        "splits": {name: _counts(part) for name, part in parts.items()},
    }
    if ehr_columns:
        summary["rows_with_missing_ehr"] = int(written[list(ehr_columns)].isna().any(axis=1).sum())
        summary["missing"] = {
            column: {"count": int(written[column].isna().sum()), "fraction": float(written[column].isna().mean())}
            for column in ehr_columns
        }
        summary["ehr"] = {column: _distribution(written[column]) for column in ehr_columns}
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary as the plain-text report printed at the end of a pipeline."""
    lines = [f"{key}: {value}" for key, value in summary["pipeline"].items()]
    lines.append(f"{'split':<8}{'rows':>9}{'patients':>10}{'normal':>9}{'abnormal':>10}  sex / view")
    for name, counts in summary["splits"].items():
        breakdown = ", ".join(f"{key} {value}" for key, value in {**counts["sex"], **counts["view"]}.items())
        lines.append(
            f"{name:<8}{counts['rows']:>9}{counts['patients']:>10}{counts['normal']:>9}{counts['abnormal']:>10}"
            f"  {breakdown}"
        )
    if "ehr" in summary:
        lines.append(f"rows with any missing EHR: {summary['rows_with_missing_ehr']}")
        lines.append(f"{'feature':<14}{'missing':>9}{'mean':>9}{'std':>8}{'min':>8}{'median':>8}{'max':>8}")
        for column, stats in summary["ehr"].items():
            missing = summary["missing"][column]
            cells = [stats.get(key) for key in ("mean", "std", "min", "median", "max")]
            rendered = "".join(f"{value:>8.1f}" if value is not None else f"{'-':>8}" for value in cells)
            lines.append(f"{column:<14}{missing['fraction']:>8.1%} {rendered}")
    return "\n".join(lines)


def save_summary(summary: dict[str, Any], output_dir: Path) -> Path:
    """Write ``summary.json`` next to the CSVs, atomically."""
    return write_json_atomic(summary, Path(output_dir) / "summary.json")
