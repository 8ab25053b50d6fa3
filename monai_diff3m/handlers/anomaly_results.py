"""Ignite handlers that turn scored batches into files: scores.csv, failures.csv, NIfTI/PNG maps, metrics.json."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pandas as pd
from ignite.engine import Engine, Events
from ignite.engine.events import RemovableEventHandle
from matplotlib import colormaps
from monai.utils import str2bool
from nibabel.spatialimages import HeaderDataError
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from monai_diff3m import schema
from monai_diff3m.handlers.output_folder import GrowingCSV, OutputFolder, partial_path
from monai_diff3m.inferers.anomaly import SCORE_NAMES
from monai_diff3m.io import atomic_path, write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import abnormal_labels, evaluate_table, pixel_metrics, present_subgroups
from monai_diff3m.metrics.plots import save_roc_pr_curves
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE

logger = logging.getLogger(__name__)

RECORD_COLUMNS = (schema.PATIENT_ID, schema.EHR_ROW, schema.NO_FINDING, schema.LESION)
SCORES_FILE = "scores.csv"
FAILURES_FILE = "failures.csv"
METRICS_FILE = "metrics.json"
CURVES_FILE = "roc_pr_curves.png"
MAP_COLUMNS = ("map_nifti", "map_overlay")
FAILURE_COLUMNS = ("path", "reason")


class AnomalyResultWriter:
    """Write one row per scored image to ``scores.csv``, the inputs that could not be scored to ``failures.csv``, and
    the anomaly maps, keeping the output folder consistent whatever happens to the run.

    Each row has the image, every score, the EHR values the model was given (as read; empty = missing, encoded as
    the learned "missing" token) and the attention weight of each EHR token. Maps are written per image as NIfTI
    (with the spacing of the resized image) and as a PNG overlay. A computed score is never lost: an image whose map
    cannot be written (a full disk) keeps its ``scores.csv`` row without map columns, gets a ``failures.csv`` row
    saying so, and the run ends with ``OutputWriteError`` (a nonzero exit) after every table is written; a score
    table that cannot be written logs the batch's scores before the error stops the run. When the run starts, the
    writer locks the folder against a second run and refuses a folder with earlier results unless ``overwrite``
    (``OutputFolder``), then removes the previous run's tables and the maps they name; rows and failures are appended
    to ``scores.partial.csv`` / ``failures.partial.csv`` after every batch and renamed onto ``scores.csv`` /
    ``failures.csv`` when the run completes, so a killed run keeps its finished batches and never leaves an old
    ``scores.csv`` beside new maps.

    Args:
        output_dir: folder for all outputs.
        records: the records that were scored (their ``source`` identifies them) for the EHR and label columns.
        slot_names: EHR token names (``ehr_slot_names(groups)``) for the attention columns; empty without EHR.
        failures: ``(path, reason)`` of inputs that could not be scored, written to ``failures.csv``.
        write_maps: write the per-image NIfTI and PNG maps (off for quick evaluations).
        keep_maps: keep maps and masks in memory for pixel-level metrics.
        image_range: intensity range of the scored images, to show them in gray in the overlays.
        overwrite: allow an output folder that holds an earlier run's results, which are then replaced.
    """

    def __init__(
        self,
        output_dir: str | Path,
        records: Sequence[Mapping[str, Any]],
        slot_names: Sequence[str] = (),
        failures: Sequence[tuple[str, str]] = (),
        write_maps: bool = True,
        keep_maps: bool = False,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        overwrite: bool | str = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.records = {str(record.get("source")): record for record in records}
        self.slot_names = list(slot_names)
        self.input_failures = list(failures)
        self.write_maps = write_maps
        self.keep_maps = keep_maps
        self.image_range = tuple(float(bound) for bound in image_range)
        self.folder = OutputFolder(self.output_dir, overwrite=str2bool(overwrite))
        self.unwritten_maps: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.failures: list[tuple[str, str]] = []
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self._used_names: set[str] = set()
        self._scores: GrowingCSV | None = None
        self._failures: GrowingCSV | None = None
        self._release_handle: RemovableEventHandle | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write_tables)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._abort)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def _start(self, engine: Engine) -> None:
        self.folder.acquire()
        # registered now, so it runs after every COMPLETED handler attached with the config (metrics.json included)
        self._release_handle = engine.add_event_handler(Events.COMPLETED, self._finish)
        self.folder.clear_previous_run(
            tables=(SCORES_FILE, FAILURES_FILE, METRICS_FILE, CURVES_FILE),
            files_named_in=(SCORES_FILE, partial_path(SCORES_FILE).name),
            file_columns=MAP_COLUMNS,
        )
        self.rows, self.maps, self.masks, self._used_names, self.unwritten_maps = [], [], [], set(), []
        self.failures = list(self.input_failures)
        self._scores = GrowingCSV(self.output_dir / SCORES_FILE)
        self._failures = GrowingCSV(self.output_dir / FAILURES_FILE, columns=FAILURE_COLUMNS)
        self._failures.append([dict(zip(FAILURE_COLUMNS, failure)) for failure in self.failures])

    def _collect(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        image = output["image"].float().cpu().numpy()
        anomaly_map = output["anomaly_map"].float().cpu().numpy()
        scores = {name: value.float().cpu().numpy() for name, value in output["scores"].items()}
        attention = output.get("ehr_attention")
        attention = None if attention is None else attention.float().cpu().numpy()
        rows, failures = [], []
        for index, source in enumerate(output["source"]):
            record = self.records.get(str(source), {})
            image_path = str(record.get("image", source))
            row: dict[str, Any] = {"image": image_path}
            row.update(
                {column: record.get(column) for column in (*RECORD_COLUMNS, *schema.EHR_COLUMNS) if column in record}
            )
            row.update({name: float(values[index]) for name, values in scores.items()})
            if attention is not None:
                row.update(
                    {
                        f"attention[{slot}]": float(attention[index, position])
                        for position, slot in enumerate(self.slot_names)
                    }
                )
            if self.write_maps:
                name = self._unique_name(image_path)
                affine = output.get("affine")
                spacing = (1.0, 1.0) if affine is None else (float(affine[index][0, 0]), float(affine[index][1, 1]))
                row.update(dict.fromkeys(MAP_COLUMNS))  # the columns exist even when the first batch's maps fail
                try:
                    self._write_map_files(name, image[index, 0], anomaly_map[index, 0], spacing)
                    row["map_nifti"] = f"maps/{name}.nii.gz"
                    row["map_overlay"] = f"overlays/{name}.png"
                except (OSError, ValueError, HeaderDataError) as error:
                    logger.error("the anomaly map of %s cannot be written (its scores are kept): %s", image_path, error)
                    reason = (
                        "scored (its row in scores.csv has the scores), but its anomaly map cannot be written: "
                        f"{type(error).__name__}: {error}"
                    )
                    failures.append((image_path, reason))
                    self.unwritten_maps.append(image_path)
            rows.append(row)
            if self.keep_maps:
                self.maps.append(output["smoothed_map"][index, 0].float().cpu().numpy())
                if "mask" in output:
                    self.masks.append(output["mask"][index, 0].float().cpu().numpy())
        self.rows.extend(rows)
        self.failures.extend(failures)
        assert self._scores is not None and self._failures is not None, "attach() registers _start first"
        try:
            self._scores.append(rows)
        except OSError:
            for row in rows:  # the last place a computed score can go
                logger.error("score table cannot be written; scores of %s: %s", row["image"], _score_text(row))
            raise
        self._failures.append([dict(zip(FAILURE_COLUMNS, failure)) for failure in failures])

    def _unique_name(self, image_path: str) -> str:
        stem = Path(image_path).name.split(".")[0] or "image"
        name, counter = stem, 1
        while name in self._used_names:
            counter += 1
            name = f"{stem}_{counter}"
        self._used_names.add(name)
        return name

    def _write_map_files(
        self, name: str, image: np.ndarray, anomaly_map: np.ndarray, spacing: tuple[float, float]
    ) -> None:
        nifti_path = self.output_dir / "maps" / f"{name}.nii.gz"
        nifti_path.parent.mkdir(parents=True, exist_ok=True)
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        with atomic_path(nifti_path) as temporary:
            nib.save(nib.Nifti1Image(anomaly_map.astype(np.float32), affine), str(temporary))
        overlay_path = self.output_dir / "overlays" / f"{name}.png"
        overlay_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(overlay_path) as temporary:
            Image.fromarray(anomaly_overlay(image, anomaly_map, image_range=self.image_range)).save(
                temporary, format="PNG"
            )

    def _write_tables(self, engine: Engine) -> None:
        assert self._scores is not None and self._failures is not None, "attach() registers _start first"
        self._scores.promote()
        self._failures.promote()
        logger.info(
            "scored %d image(s), %d failure(s); results in %s", len(self.rows), len(self.failures), self.output_dir
        )
        for path, reason in self.failures:
            logger.warning("not scored: %s (%s)", path, reason)

    def _finish(self, engine: Engine) -> None:
        """Free the folder after every other COMPLETED handler; then fail the run if an output was not written."""
        self._release(engine)
        if self.unwritten_maps:
            raise OutputWriteError(
                f"{len(self.unwritten_maps)} anomaly map(s) could not be written to {self.output_dir} (e.g. "
                f"{self.unwritten_maps[:3]}; see failures.csv): their scores are in scores.csv. Free disk space and "
                "rerun with --overwrite true for the maps"
            )

    def _release(self, engine: Engine) -> None:
        if self._release_handle is not None:
            self._release_handle.remove()
            self._release_handle = None
        self.folder.release()

    def _abort(self, engine: Engine, error: BaseException) -> None:
        """Keep the partial tables (every finished batch), free the folder for a rerun, and let the error through."""
        self._release(engine)
        raise error


class OutputWriteError(OSError):
    """Scoring finished and its tables are written, but some outputs (anomaly maps) could not be."""


def _score_text(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={row[name]:.6g}" for name in SCORE_NAMES if name in row)


def anomaly_overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    opacity: float = 0.6,
    image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
) -> np.ndarray:
    """RGB uint8 overlay: the image in gray (from ``image_range``) blended with the per-image-scaled map, 'inferno'."""
    low, high = image_range
    gray = np.clip((image - low) / (high - low), 0.0, 1.0)
    scaled = anomaly_map / max(float(anomaly_map.max()), 1e-8)
    heat = colormaps["inferno"](scaled)[..., :3]
    alpha = opacity * scaled[..., None]
    blended = gray[..., None] * (1.0 - alpha) + heat * alpha
    return (blended * 255.0).round().astype(np.uint8)


class AnomalyEvaluationHandler:
    """After scoring a labelled split: metrics.json, ROC/PR curves and TensorBoard scalars.

    Image metrics (AUROC, AUPRC, best F1 and threshold, sensitivity at 95% specificity, bootstrap intervals) for
    every score, per subgroup (sex, age band, view), and pixel metrics of the smoothed maps where masks exist.

    Args:
        writer: the ``AnomalyResultWriter`` attached to the same evaluator (attach it first).
        output_dir: folder for ``metrics.json`` and ``roc_pr_curves.png``.
        summary_writer: TensorBoard writer for the metric scalars (optional).
        num_bootstrap: bootstrap resamples for the intervals.
        seed: bootstrap seed.
    """

    def __init__(
        self,
        writer: AnomalyResultWriter,
        output_dir: str | Path,
        summary_writer: SummaryWriter | None = None,
        num_bootstrap: int = 1000,
        seed: int = 0,
    ) -> None:
        self.writer = writer
        self.output_dir = Path(output_dir)
        self.summary_writer = summary_writer
        self.num_bootstrap = num_bootstrap
        self.seed = seed
        self.metrics: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        table = self.writer.table()
        if schema.NO_FINDING not in table.columns:
            raise ValueError(f"evaluation needs labels: the scored records have no {schema.NO_FINDING!r} column")
        groups = present_subgroups(table)
        metrics = evaluate_table(
            table, list(SCORE_NAMES), schema.NO_FINDING, groups, self.num_bootstrap, seed=self.seed
        )
        lesion_masks = [mask for mask in self.writer.masks if mask.any()]
        if self.writer.masks and lesion_masks:
            metrics["pixel"] = pixel_metrics(np.stack(self.writer.masks), np.stack(self.writer.maps), seed=self.seed)
        self.metrics = metrics
        write_json_atomic(metrics, self.output_dir / METRICS_FILE)
        labels = abnormal_labels(table)
        save_roc_pr_curves(
            labels, {name: table[name].to_numpy() for name in SCORE_NAMES}, self.output_dir / CURVES_FILE
        )
        if self.summary_writer is not None:
            for name, values in metrics["scores"].items():
                for metric in ("auroc", "auprc", "best_f1", "sensitivity_at_95_specificity"):
                    self.summary_writer.add_scalar(f"test/{name}/{metric}", values[metric], engine.state.epoch)
            for metric, value in metrics.get("pixel", {}).items():
                if metric.startswith(("pixel_", "best_dice")):
                    self.summary_writer.add_scalar(f"test/pixel/{metric}", value, engine.state.epoch)
            self.summary_writer.flush()
        best = metrics["best_score"]
        logger.info(
            "best score %s: AUROC %.3f, AUPRC %.3f",
            best,
            metrics["scores"][best]["auroc"],
            metrics["scores"][best]["auprc"],
        )
