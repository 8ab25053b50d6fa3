"""Ignite handler that turns scored batches into the run's tables: scores.csv and failures.csv.

It owns the output folder for the run (the lock, the clean start, the partial tables promoted at the end), so the
other writers of a scoring run (the map files, metrics.json, report.html) write into a folder it has made safe and
read the rows from it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.engine.events import RemovableEventHandle
from monai.utils import CommonKeys, str2bool

from monai_diff3m import schema
from monai_diff3m.errors import InvalidInputError
from monai_diff3m.handlers.anomaly_maps import MAP_COLUMNS, MAP_WRITE_ERRORS, AnomalyMapWriter, default_map_max
from monai_diff3m.handlers.evaluation import CURVES_FILE, METRICS_FILE
from monai_diff3m.handlers.output_folder import GrowingCSV, OutputFolder, partial_path
from monai_diff3m.inferers.image_scores import DEFAULT_SCORE, SCORE_NAMES
from monai_diff3m.reports.figures import FilmPreview
from monai_diff3m.reports.html import REPORT_FILE
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE

logger = logging.getLogger(__name__)

RECORD_COLUMNS = (schema.PATIENT_ID, schema.EHR_ROW, schema.NO_FINDING, schema.LESION)
SCORES_FILE = "scores.csv"
FAILURES_FILE = "failures.csv"
FAILURE_COLUMNS = ("path", "reason")
#: The column of the score the bundle stands behind (``score``); every score also keeps its own column.
PRIMARY_SCORE_COLUMN = "anomaly_score"
#: Percent of the reference normals (the validation normals recorded with the checkpoint) scoring at most as high.
PERCENTILE_COLUMN = "anomaly_percentile"


class ScoreTableWriter:
    """Write one row per scored image to ``scores.csv`` and the inputs that could not be scored to ``failures.csv``,
    keeping the output folder consistent whatever happens to the run.

    Each row has the image, ``anomaly_score`` (the configured ``score``, the one the model stands behind; with
    ``reference_scores``, also ``anomaly_percentile`` among those normals), the labels and EHR values the model was
    given (as read; empty = missing, encoded as the learned "missing" token), every score under its own name, and the
    attention weight of each EHR field the film had (for a one-hot field, the weight of the film's own category;
    fields no record has get no column). With a ``map_writer``, each row's map files are written as the row is made
    (see ``AnomalyMapWriter``) and named in its ``map_nifti`` / ``map_overlay`` columns; a computed score is never
    lost: an image whose map cannot be written (a full disk, a film that cannot be re-read) keeps its ``scores.csv``
    row with empty map columns, gets a ``failures.csv`` row saying so, and the run ends with ``OutputWriteError`` (a
    nonzero exit) after every table is written; a score table that cannot be written logs the batch's scores before
    the error stops the run. The ``max_previews`` highest-scoring films are kept at the model's resolution for the
    HTML report and TensorBoard, drawn on the maps' colour scale (``image_range``, ``map_max``).

    When the run starts, the writer locks the folder against a second run and refuses a folder with earlier
    results unless ``overwrite`` (``OutputFolder``), then removes the
    previous run's tables and the maps they name; rows and failures are appended to ``scores.partial.csv`` /
    ``failures.partial.csv`` after every batch and renamed onto ``scores.csv`` / ``failures.csv`` when the run
    completes, so a killed run keeps its finished batches and never leaves an old ``scores.csv`` beside new maps.

    Args:
        output_dir: folder for all outputs.
        records: the records that were scored (their ``source`` identifies them) for the EHR and label columns.
        slot_names: EHR token names (``ehr_slot_names(groups)``) for the attention columns; empty without EHR.
        failures: ``(path, reason)`` of inputs that could not be scored, written to ``failures.csv``.
        map_writer: writes each image's NIfTI and PNG maps; None writes none (quick evaluations).
        keep_maps: keep maps and masks in memory for pixel-level metrics.
        image_range: intensity range of the scored images, to show the previews in gray.
        score_names: the image scores the inferer computes (``Diff3MAnomalyInferer(scores=...)``), each its own
            column in that order; the evaluation reports these.
        score: the one of ``score_names`` written as ``anomaly_score``.
        reference_scores: ``score`` of reference normal films, for ``anomaly_percentile``; None or empty: no column.
        map_max: map value (intensity units) drawn at full colour in the previews, the ``map_writer``'s too (one
            colour scale for every map the run shows); default a quarter of the range.
        max_previews: films kept for the report and TensorBoard (the highest scores).
        overwrite: allow an output folder that holds an earlier run's results, which are then replaced.
    """

    def __init__(
        self,
        output_dir: str | Path,
        records: Sequence[Mapping[str, Any]],
        slot_names: Sequence[str] = (),
        failures: Sequence[tuple[str, str]] = (),
        map_writer: AnomalyMapWriter | None = None,
        keep_maps: bool = False,
        image_range: Sequence[float] = DIFFUSION_IMAGE_RANGE,
        score_names: Sequence[str] = SCORE_NAMES,
        score: str = DEFAULT_SCORE,
        reference_scores: Sequence[float] | None = None,
        map_max: float | None = None,
        max_previews: int = 100,
        overwrite: bool | str = False,
    ) -> None:
        if score not in score_names:
            raise InvalidInputError(f"--score must be one of the computed scores {list(score_names)}, got {score!r}")
        self.output_dir = Path(output_dir)
        self.records = {str(record.get("source")): record for record in records}
        self.slot_names = list(slot_names)
        self.input_failures = list(failures)
        self.map_writer = map_writer
        self.keep_maps = keep_maps
        self.image_range = tuple(float(bound) for bound in image_range)
        self.score_names = tuple(score_names)
        self.score = score
        self.reference_scores = np.sort(np.asarray(reference_scores if reference_scores else [], dtype=float))
        self.map_max = default_map_max(self.image_range) if map_max is None else float(map_max)
        if map_writer is not None and (map_writer.image_range, map_writer.map_max) != (self.image_range, self.map_max):
            raise InvalidInputError(
                f"the maps ({map_writer.image_range}, map_max {map_writer.map_max}) and the previews "
                f"({self.image_range}, map_max {self.map_max}) must share one colour scale: give both the same "
                "image_range and map_max"
            )
        self.max_previews = max_previews
        self.attention_fields = present_ehr_fields(self.slot_names, self.records.values())
        self.previews: list[FilmPreview] = []
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
            tables=(SCORES_FILE, FAILURES_FILE, METRICS_FILE, CURVES_FILE, REPORT_FILE),
            files_named_in=(SCORES_FILE, partial_path(SCORES_FILE).name),
            file_columns=MAP_COLUMNS,
        )
        self._open_tables(SCORES_FILE, FAILURES_FILE)

    def _open_tables(self, scores_file: str, failures_file: str) -> None:
        """Empty the collected results and start the growing tables, the input failures first."""
        self.rows, self.maps, self.masks, self._used_names, self.previews = [], [], [], set(), []
        self.unwritten_maps = []
        self.failures = list(self.input_failures)
        self._scores = GrowingCSV(self.output_dir / scores_file)
        self._failures = GrowingCSV(self.output_dir / failures_file, columns=FAILURE_COLUMNS)
        self._failures.append([dict(zip(FAILURE_COLUMNS, failure)) for failure in self.failures])

    def _collect(self, engine: Engine) -> None:
        output = scored_batch(engine)
        image = output["image"].float().cpu().numpy()
        twin = output["twin"].float().cpu().numpy()
        anomaly_map = output["anomaly_map"].float().cpu().numpy()
        scores = {name: value.float().cpu().numpy() for name, value in output["scores"].items()}
        if tuple(scores) != self.score_names:
            raise InvalidInputError(
                f"the inferer computes the scores {list(scores)}, the score table expects {list(self.score_names)}: "
                "give both the same list (inference.json's score_names)"
            )
        attention = output.get("ehr_attention")
        attention = None if attention is None else attention.float().cpu().numpy()
        ehr, missing = output.get("ehr"), output.get("ehr_missing")
        given = None
        if attention is not None and ehr is not None and missing is not None:  # the image-only model reads no EHR
            given = self._given_slots(ehr.float().cpu().numpy(), missing)
        rows, failures = [], []
        for index, source in enumerate(output["source"]):
            record = self.records.get(str(source), {})
            image_path = str(record.get("image", source))
            score = float(scores[self.score][index])
            row: dict[str, Any] = {"image": image_path, PRIMARY_SCORE_COLUMN: score}
            if self.reference_scores.size:
                row[PERCENTILE_COLUMN] = round(self.percentile(score), 1)
            row.update(
                {column: record.get(column) for column in (*RECORD_COLUMNS, *schema.ehr_columns()) if column in record}
            )
            row.update({name: float(values[index]) for name, values in scores.items()})
            if attention is not None:
                row.update(self._attention_columns(attention[index], None if given is None else given[index]))
            if self.map_writer is not None:
                files, reason = self._write_maps(self.map_writer, image_path, score, anomaly_map[index, 0])
                row.update(files)
                if reason is not None:
                    failures.append((image_path, reason))
                    self.unwritten_maps.append(image_path)
            rows.append(row)
            self._keep_preview(image_path, score, image[index, 0], twin[index, 0], anomaly_map[index, 0])
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
                logger.error(
                    "score table cannot be written; scores of %s: %s", row["image"], _score_text(row, self.score_names)
                )
            raise
        self._failures.append([dict(zip(FAILURE_COLUMNS, failure)) for failure in failures])

    def _write_maps(
        self, map_writer: AnomalyMapWriter, image_path: str, score: float, anomaly_map: np.ndarray
    ) -> tuple[dict[str, str | None], str | None]:
        """The row's ``MAP_COLUMNS`` and None, or, when the maps cannot be written, empty columns (the columns exist
        even when the first batch's maps fail) and the reason for ``failures.csv``."""
        name = self._unique_name(image_path)
        try:
            return dict(map_writer.write(name, image_path, anomaly_map, self._title(image_path, score))), None
        except MAP_WRITE_ERRORS as error:
            logger.error("the anomaly map of %s cannot be written (its scores are kept): %s", image_path, error)
            reason = (
                "scored (its row in scores.csv has the scores), but its anomaly map cannot be written: "
                f"{type(error).__name__}: {error}"
            )
            return dict.fromkeys(MAP_COLUMNS), reason

    def _given_slots(self, ehr: np.ndarray, missing: Any) -> np.ndarray:
        """(N, slots) True where the film had the slot's value: present, and for a one-hot slot its own category."""
        present = np.asarray(torch.as_tensor(missing).float().cpu().numpy() < 0.5)
        one_hot = np.array(["=" in slot for slot in self.slot_names], dtype=bool)
        return present & (~one_hot | (ehr > 0.5))

    def _attention_columns(self, weights: np.ndarray, given: np.ndarray | None) -> dict[str, float | None]:
        """``attention[field]``: the weight of the slot the film had for each field, empty where it had none."""
        columns: dict[str, float | None] = {f"attention[{name}]": None for name in self.attention_fields}
        for position, slot in enumerate(self.slot_names):
            name = slot.split("=")[0]
            if name in self.attention_fields and (given is None or given[position]):
                columns[f"attention[{name}]"] = float(weights[position])
        return columns

    def _keep_preview(
        self, image_path: str, score: float, film: np.ndarray, twin: np.ndarray, anomaly_map: np.ndarray
    ) -> None:
        preview = FilmPreview(score, -len(self.rows) - len(self.previews), image_path, film, twin, anomaly_map)
        if len(self.previews) < self.max_previews:
            heapq.heappush(self.previews, preview)
        elif self.max_previews and preview > self.previews[0]:
            heapq.heapreplace(self.previews, preview)

    def _unique_name(self, image_path: str) -> str:
        stem = Path(image_path).name.split(".")[0] or "image"
        name, counter = stem, 1
        while name in self._used_names:
            counter += 1
            name = f"{stem}_{counter}"
        self._used_names.add(name)
        return name

    def _title(self, image_path: str, score: float) -> str:
        """The overlay's title: the film, its score and, with reference normals, how many of them it exceeds."""
        title = f"{Path(image_path).name}   anomaly score {score:.4g} ({self.score})"
        if self.reference_scores.size:
            title += f", above {self.percentile(score):.0f}% of reference normals"
        return title

    def percentile(self, score: float) -> float:
        """Percent of the reference normals whose score is at most ``score``."""
        below = np.searchsorted(self.reference_scores, score, side="right")
        return 100.0 * float(below) / self.reference_scores.size

    def ranked_previews(self) -> list[FilmPreview]:
        """The kept films, highest ``anomaly_score`` first."""
        return sorted(self.previews, reverse=True)

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


def scored_batch(engine: Engine) -> dict[str, Any]:
    """One iteration of a stock ``SupervisedEvaluator`` running ``Diff3MAnomalyInferer``, as the writers read it: the
    scored ``image``, the inferer's result (the evaluator's ``pred``: twin, maps, scores, EHR attention) and, from the
    batch, the films' ``source``, their encoded ``ehr`` and its ``ehr_missing`` mask, and the ground-truth ``mask``
    when there is one."""
    output = cast(dict[str, Any], engine.state.output)
    batch = cast(dict[str, Any], engine.state.batch)
    image = output[CommonKeys.IMAGE]
    scored = {CommonKeys.IMAGE: image, **output[CommonKeys.PRED]}
    scored["source"] = list(batch.get("source", [""] * image.shape[0]))
    scored.update({key: torch.as_tensor(batch[key]) for key in ("ehr", "ehr_missing", "mask") if key in batch})
    return scored


def present_ehr_fields(slot_names: Sequence[str], records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The EHR fields of ``slot_names`` (``Sex`` for ``Sex=Male``) that at least one record has a value for."""
    fields = list(dict.fromkeys(slot.split("=")[0] for slot in slot_names))
    records = list(records)
    return [name for name in fields if any(not schema.is_missing(record.get(name)) for record in records)]


class OutputWriteError(OSError):
    """Scoring finished and its tables are written, but some outputs (anomaly maps) could not be."""


def _score_text(row: Mapping[str, Any], score_names: Sequence[str]) -> str:
    return ", ".join(f"{name}={row[name]:.6g}" for name in score_names if name in row)
