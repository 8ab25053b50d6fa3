"""Ignite handler that writes the offline HTML report next to ``scores.csv`` when scoring completes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ignite.engine import Engine, Events

from monai_diff3m.handlers.anomaly_results import CURVES_FILE, AnomalyEvaluationHandler, AnomalyResultWriter
from monai_diff3m.reports.html import REPORT_FILE, write_html_report

logger = logging.getLogger(__name__)


class HTMLReportHandler:
    """Write ``report.html`` (see :func:`write_html_report`) from what the result writer and the evaluation hold.

    Attach it after the ``AnomalyResultWriter`` and, on evaluation, after the ``AnomalyEvaluationHandler``, so that
    the tables and metrics it shows are complete.

    Args:
        writer: the result writer of the same evaluator.
        evaluation: the evaluation handler, for curves, metrics and subgroups; None when scoring unlabelled films.
        warnings: sentences shown at the top of the page (see ``checkpoints.training_data_warnings``).
        title: the page title.
    """

    def __init__(
        self,
        writer: AnomalyResultWriter,
        evaluation: AnomalyEvaluationHandler | None = None,
        warnings: Sequence[str] = (),
        title: str = "Diff3M anomaly scores",
    ) -> None:
        self.writer = writer
        self.evaluation = evaluation
        self.warnings = list(warnings)
        self.title = title

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        curves = self.writer.output_dir / CURVES_FILE
        metrics = None if self.evaluation is None else self.evaluation.metrics
        path = self.writer.output_dir / REPORT_FILE
        write_html_report(
            path,
            self.writer.table(),
            self.writer.ranked_previews(),
            self.writer.failures,
            score=self.writer.score,
            image_range=self.writer.image_range,
            map_max=self.writer.map_max,
            warnings=self.warnings,
            metrics=metrics,
            curves_png=curves.read_bytes() if metrics is not None and curves.is_file() else None,
            title=self.title,
        )
        logger.info("report: %s", path)
