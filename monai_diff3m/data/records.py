"""Turning inputs into records that survive bad files: scan, transform, and report what failed.

Batch scoring must keep going when one file among thousands is broken, so every record is transformed once up
front; a record whose loading or EHR encoding fails becomes a ``(path, reason)`` failure instead of an exception,
and the transformed records go straight into a plain ``Dataset`` (they are already cached in memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_diff3m import schema
from monai_diff3m.data.dataset_csv import IMAGE_KEY
from monai_diff3m.data.dicom import scan_dicom_folder
from monai_diff3m.data.image_folder import scan_image_folder
from monai_diff3m.data.input_files import Failure

logger = logging.getLogger(__name__)


def scan_inputs(
    image_dir: str | Path | None = None,
    ehr_csv: str | Path | None = None,
    dicom_dir: str | Path | None = None,
    exclude: Sequence[str | Path | None] = (),
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Records for new images: a folder of PNG/JPEG/DICOM files with an EHR CSV, or DICOM files alone.

    With ``dicom_dir`` the EHR comes from the ``PatientSex``, ``PatientAge`` and ``ViewPosition`` tags; absent tags
    become explicit missing values. Each record gets the image path under ``"image"`` as the bundles expect.
    Folders in ``exclude`` (the run's output folder) and earlier output folders are never read as input.
    """
    if (image_dir is None) == (dicom_dir is None):
        raise ValueError("give exactly one input: `image_dir` (with `ehr_csv`) or `dicom_dir`")
    if image_dir is not None:
        if ehr_csv is None:
            raise ValueError(
                f"`image_dir` {image_dir} needs an `ehr_csv` keyed by path relative to it (column {schema.PATH!r})"
            )
        records, failures = scan_image_folder(image_dir, ehr_csv, exclude)
    elif dicom_dir is not None:
        records, failures = scan_dicom_folder(dicom_dir, exclude)
    for record in records:
        record[IMAGE_KEY] = str(record[schema.PATH])
        record["source"] = str(record[schema.PATH])
    if not records:
        raise ValueError(f"no scorable image in {image_dir or dicom_dir}; failures: {failures[:5]}")
    return records, failures


def transform_or_report(
    records: Sequence[Mapping[str, Any]], transform: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Failure]]:
    """Apply ``transform`` to each record; a record that fails becomes a failure naming its file and the reason.

    Only input errors are caught (our named errors subclass ``ValueError``; missing or unreadable files raise
    ``OSError``); MONAI wraps transform exceptions in ``RuntimeError``, whose cause is inspected.
    """
    items, failures = [], []
    for record in records:
        try:
            items.append(transform(record))
        except (ValueError, OSError, RuntimeError) as error:
            cause = _input_error(error)
            if cause is None:
                raise
            name = str(record.get(IMAGE_KEY) or record.get(schema.PATH))
            logger.warning("skipping %s: %s", name, cause)
            failures.append((name, f"{type(cause).__name__}: {cause}"))
    if not items:
        raise ValueError(f"every one of the {len(records)} input(s) failed; first failures: {failures[:3]}")
    return items, failures


def _input_error(error: BaseException) -> BaseException | None:
    """The input error inside MONAI's ``RuntimeError`` wrapping, or None for a genuine bug."""
    while isinstance(error, RuntimeError) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, (ValueError, OSError)) else None
