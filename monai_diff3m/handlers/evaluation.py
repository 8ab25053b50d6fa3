"""Ignite handler that evaluates a labelled split from the score table: metrics.json, ROC/PR curves, TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ignite.engine import Engine, Events
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from monai_diff3m import schema
from monai_diff3m.io import write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import (
    abnormal_labels,
    below_chance_warnings,
    evaluate_table,
    pixel_metrics,
    present_subgroups,
)
from monai_diff3m.metrics.plots import save_roc_pr_curves
from monai_diff3m.reports.figures import map_overlay, to_gray

if TYPE_CHECKING:  # for the annotation only: score_table imports the file names below (to clear an earlier run)
    from monai_diff3m.handlers.score_table import ScoreTableWriter

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CURVES_FILE = "roc_pr_curves.png"


class AnomalyEvaluationHandler:
    """After scoring a labelled split: metrics.json, ROC/PR curves and TensorBoard scalars and images.

    Image metrics (AUROC, AUPRC, best F1 and threshold, sensitivity at 95% specificity, bootstrap intervals) for
    every score, per subgroup (sex, age band, view), and pixel metrics of the smoothed maps where masks exist. In
    TensorBoard, under ``tag_prefix`` (``valid``, ``test``: each evaluation its own tags, in its own run folder): the
    metrics, the curves, and the highest-scoring films, one a row, highest first (input | twin | map on the shared
    scale).

    Reads everything from the ``ScoreTableWriter`` (the rows, and the maps and masks it keeps with ``keep_maps``),
    so metrics come from exactly the rows in ``scores.csv``, merged in the records' order on a multi-GPU run.

    Args:
        score_table: the ``ScoreTableWriter`` attached to the same evaluator (attach it first).
        output_dir: folder for ``metrics.json`` and ``roc_pr_curves.png``.
        summary_writer: TensorBoard writer for the metric scalars (optional).
        num_bootstrap: bootstrap resamples for the intervals.
        seed: bootstrap seed.
        tag_prefix: TensorBoard tag prefix, the name of the evaluated split.
        num_top_films: films in the TensorBoard grid of the highest scores.
        schedule: the scoring schedule's name (``ScoringSchedule.name``), written into ``metrics.json`` so that the
            figures say how the films were scored (optional).
    """

    def __init__(
        self,
        score_table: ScoreTableWriter,
        output_dir: str | Path,
        summary_writer: SummaryWriter | None = None,
        num_bootstrap: int = 1000,
        seed: int = 0,
        tag_prefix: str = "test",
        num_top_films: int = 8,
        schedule: str | None = None,
    ) -> None:
        self.score_table = score_table
        self.tag_prefix = tag_prefix
        self.num_top_films = num_top_films
        self.output_dir = Path(output_dir)
        self.summary_writer = summary_writer
        self.num_bootstrap = num_bootstrap
        self.seed = seed
        self.schedule = schedule
        self.metrics: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        table = self.score_table.table()
        if schema.NO_FINDING not in table.columns:
            raise ValueError(f"evaluation needs labels: the scored records have no {schema.NO_FINDING!r} column")
        groups = present_subgroups(table)
        metrics = evaluate_table(
            table, list(self.score_table.score_names), schema.NO_FINDING, groups, self.num_bootstrap, seed=self.seed
        )
        masks, maps = self.score_table.masks, self.score_table.maps
        if any(mask.any() for mask in masks):
            metrics["pixel"] = pixel_metrics(np.stack(masks), np.stack(maps), seed=self.seed)
        if self.schedule is not None:
            metrics["schedule"] = self.schedule
        metrics["warnings"] = below_chance_warnings(metrics)
        for warning in metrics["warnings"]:
            logger.warning(warning)
        self.metrics = metrics
        write_json_atomic(metrics, self.output_dir / METRICS_FILE)
        labels = abnormal_labels(table)
        save_roc_pr_curves(
            labels,
            {name: table[name].to_numpy() for name in self.score_table.score_names},
            self.output_dir / CURVES_FILE,
        )
        if self.summary_writer is not None:
            self._log_tensorboard(self.summary_writer, metrics, engine.state.epoch)
        primary, best = self.score_table.score, metrics["best_score"]
        logger.info(
            "anomaly_score (%s): AUROC %.3f, AUPRC %.3f; best of all scores here: %s (AUROC %.3f)",
            primary,
            metrics["scores"][primary]["auroc"],
            metrics["scores"][primary]["auprc"],
            best,
            metrics["scores"][best]["auroc"],
        )

    def _log_tensorboard(self, summary_writer: SummaryWriter, metrics: dict[str, Any], step: int) -> None:
        prefix = self.tag_prefix
        for name, values in metrics["scores"].items():
            for metric in ("auroc", "auprc", "best_f1", "sensitivity_at_95_specificity"):
                summary_writer.add_scalar(f"{prefix}/{name}/{metric}", values[metric], step)
        for metric, value in metrics.get("pixel", {}).items():
            if metric.startswith(("pixel_", "best_dice")):
                summary_writer.add_scalar(f"{prefix}/pixel/{metric}", value, step)
        with Image.open(self.output_dir / CURVES_FILE) as curves:
            summary_writer.add_image(
                f"{prefix}/roc_pr_curves", np.asarray(curves.convert("RGB")), step, dataformats="HWC"
            )
        top = self.score_table.ranked_previews()[: self.num_top_films]
        if top:
            low, high = self.score_table.image_range
            rows = []
            for preview in top:
                film = to_gray(preview.film, (low, high))
                twin = to_gray(preview.twin, (low, high))
                overlay = map_overlay(film, preview.anomaly_map, self.score_table.map_max)
                gray = [
                    np.repeat((image[..., None] * 255).round().astype(np.uint8), 3, axis=2) for image in (film, twin)
                ]
                rows.append(np.concatenate([*gray, overlay], axis=1))
            summary_writer.add_image(f"{prefix}/top_scoring_films", np.concatenate(rows), step, dataformats="HWC")
        summary_writer.flush()
