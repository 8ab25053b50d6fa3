"""Ignite handler that writes the offline HTML report next to ``scores.csv`` when scoring completes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ignite.engine import Engine, Events

from monai_diff3m.handlers.evaluation import CURVES_FILE, AnomalyEvaluationHandler
from monai_diff3m.handlers.score_table import ScoreTableWriter
from monai_diff3m.reports.html import REPORT_FILE, write_html_report

logger = logging.getLogger(__name__)


class HTMLReportHandler:
    """Write ``report.html`` (see :func:`write_html_report`) from what the score table and the evaluation hold.

    Attach it after the ``ScoreTableWriter`` and, on evaluation, after the ``AnomalyEvaluationHandler``, so that
    the tables and metrics it shows are complete.

    Args:
        score_table: the score table writer of the same evaluator (rows, previews, failures, colour scale).
        evaluation: the evaluation handler, for curves, metrics and subgroups; None when scoring unlabelled films.
        warnings: sentences shown at the top of the page (see ``checkpoints.training_data_warnings``).
        title: the page title.
    """

    def __init__(
        self,
        score_table: ScoreTableWriter,
        evaluation: AnomalyEvaluationHandler | None = None,
        warnings: Sequence[str] = (),
        title: str = "Diff3M anomaly scores",
    ) -> None:
        self.score_table = score_table
        self.evaluation = evaluation
        self.warnings = list(warnings)
        self.title = title

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        curves = self.score_table.output_dir / CURVES_FILE
        metrics = None if self.evaluation is None else self.evaluation.metrics
        path = self.score_table.output_dir / REPORT_FILE
        write_html_report(
            path,
            self.score_table.table(),
            self.score_table.ranked_previews(),
            self.score_table.failures,
            score=self.score_table.score,
            image_range=self.score_table.image_range,
            map_max=self.score_table.map_max,
            warnings=self.warnings,
            metrics=metrics,
            curves_png=curves.read_bytes() if metrics is not None and curves.is_file() else None,
            title=self.title,
        )
        logger.info("report: %s", path)
