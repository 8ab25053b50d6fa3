"""Results of a scoring run split over torchrun processes, merged into the one-process run's files.

``multi_gpu_inference.json`` gives each process every ``world_size``-th record. Each process scores its shard and
writes the maps of its images; the score rows, failures and (for evaluation) kept maps are gathered at the end and
the first process writes ``scores.csv`` and ``failures.csv`` in the order of the records, so the files and the
metrics computed from them equal a one-process run's. Anomaly scores do not depend on the batch or the process:
the stochastic noise of each image is seeded by its own pixels (``inferers.anomaly.image_noise``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.distributed as dist
from ignite.engine import Engine

from monai_diff3m.handlers.output_folder import GrowingCSV
from monai_diff3m.handlers.score_table import FAILURE_COLUMNS, FAILURES_FILE, SCORES_FILE, ScoreTableWriter


class ShardedScoreTableWriter(ScoreTableWriter):
    """``ScoreTableWriter`` for one process of a torchrun scoring run (same arguments, full ``records``).

    The first process locks and clears the output folder before any process writes (a barrier); the others grow
    their rows in ``scores.rank<r>.partial.csv`` (kept if the run is killed, removed once merged). Failures are
    merged in the records' order. Map file names
    are assigned over all records in their order, as a one-process run names them, so two images with the same
    file name in different shards cannot overwrite each other's map.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        image_paths = [str(record.get("image", source)) for source, record in self.records.items()]
        self._position = {path: index for index, path in enumerate(image_paths)}
        self._map_names: dict[str, str] = {}
        for path in image_paths:
            self._map_names[path] = super()._unique_name(path)
        self._used_names = set()

    def _start(self, engine: Engine) -> None:
        rank = dist.get_rank()
        if rank == 0:
            super()._start(engine)
        dist.barrier()  # the folder is locked and cleared before any process writes a map
        if rank > 0:
            self._open_tables(f"scores.rank{rank}.csv", f"failures.rank{rank}.csv")

    def _unique_name(self, image_path: str) -> str:
        return self._map_names.get(image_path) or super()._unique_name(image_path)

    def _write_tables(self, engine: Engine) -> None:
        shard = (self.rows, self.maps, self.masks, self.failures)
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, shard)
        if dist.get_rank() > 0:
            assert self._scores is not None and self._failures is not None, "attach() registers _start first"
            self._scores.partial_path.unlink(missing_ok=True)
            self._failures.partial_path.unlink(missing_ok=True)
            return
        rows = [row for rank_rows, *_ in shards for row in rank_rows]
        order = sorted(range(len(rows)), key=lambda index: self._position.get(rows[index]["image"], math.inf))
        self.rows = [rows[index] for index in order]
        maps = [array for _, rank_maps, _, _ in shards for array in rank_maps]
        masks = [array for _, _, rank_masks, _ in shards for array in rank_masks]
        self.maps = [maps[index] for index in order] if len(maps) == len(rows) else maps
        self.masks = [masks[index] for index in order] if len(masks) == len(rows) else masks
        # in the records' order; files the scan could not read (no record; reported by the first process) first
        failures = [tuple(failure) for *_, rank_failures in shards for failure in rank_failures]
        self.failures = sorted(failures, key=lambda failure: (self._position.get(failure[0], -1), failure))
        self._scores = GrowingCSV(Path(self.output_dir) / SCORES_FILE)
        self._scores.append(self.rows)
        self._failures = GrowingCSV(Path(self.output_dir) / FAILURES_FILE, columns=FAILURE_COLUMNS)
        self._failures.append([dict(zip(FAILURE_COLUMNS, failure)) for failure in self.failures])
        super()._write_tables(engine)
