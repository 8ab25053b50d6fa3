"""Choose the bundle's defaults on a labelled dataset of real films, by validation AUROC over several training seeds.

Defaults chosen on the phantoms can lose on real films, so every default that changes what a score means
(intensity normalisation, IECA mode, optimiser, epochs, noise level, DDIM steps, the image score) is chosen here:
the dataset CSV is split by patient (:func:`monai_diff3m.data.splits.write_patient_splits`, the split the main job
uses), each candidate configuration is trained with ``train.json`` for every seed, and the **validation** split is
scored with every schedule of a grid. The test split is never read.

It prints, per configuration, schedule and image score, the validation AUROC as mean ± SD over seeds (each score
also read relative to the validation normals of the same sex, age and view, ``<score>_ehr_normalised``), and writes
every per-image score (``<work-dir>/<config>/seed<k>/validation_scores.csv``), so that new scores, fusions and
normalisations can be measured without retraining. Jobs run in parallel processes (``--workers``) on the bundle's
device (``cuda:0`` when present); a rerun skips the jobs already done::

    python -m monai_diff3m.experiments.defaults_study --dataset-csv labels.csv --image-root DIR --work-dir study \\
        --config base='{}' --config image_only='{"ieca_mode": "none"}' --seeds 0 1 2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from monai_diff3m import schema
from monai_diff3m.data.splits import write_patient_splits
from monai_diff3m.inferers.ddim import ScoringSchedule
from monai_diff3m.io import write_csv_atomic, write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import image_metrics
from monai_diff3m.metrics.ehr_baselines import EHRNormalisedScore
from monai_diff3m.packaged_bundle import config_files

RESULT_FILE = "result.json"
SCORES_FILE = "validation_scores.csv"


def parse_schedule(text: str) -> ScoringSchedule:
    """``noising:L:steps`` (``steps`` may be ``full``), e.g. ``stochastic:50:5``."""
    try:
        noising, level, steps = text.split(":")
        return ScoringSchedule(noising, int(level), None if steps == "full" else int(steps))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"schedule must be noising:L:steps, e.g. stochastic:50:5; got {text!r}"
        ) from error


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """``name=JSON`` with ``train.json`` overrides, e.g. ``image_only={"ieca_mode": "none"}``."""
    name, _, overrides = text.partition("=")
    try:
        parsed = json.loads(overrides or "{}")
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"config {name!r}: overrides must be a JSON object: {error}") from error
    if not name or not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"config must be name=JSON-object, got {text!r}")
    return name, parsed


@dataclass(frozen=True)
class Job:
    """One configuration trained with one seed, then scored on the validation split."""

    name: str
    seed: int
    overrides: Mapping[str, Any]
    schedules: tuple[ScoringSchedule, ...]
    split: Mapping[str, str]
    image_root: str
    work_dir: str
    threads: int = 0
    common: Mapping[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return Path(self.work_dir) / self.name / f"seed{self.seed}"


def run_job(job: Job) -> dict[str, Any]:
    """Train, score the validation split under every schedule, write the per-image scores and the AUROCs."""
    import torch
    from monai.bundle import run

    from monai_diff3m.experiments.scoring_study import load_scoring_data, score_images

    if (job.folder / RESULT_FILE).exists():
        return json.loads((job.folder / RESULT_FILE).read_text())
    if job.threads:
        torch.set_num_threads(job.threads)
    job.folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "bundle_root": str(job.folder),
        "train_csv": job.split["train"],
        "val_csv": job.split["valid"],
        "image_root": job.image_root,
        "seed": job.seed,
        **job.common,
        **job.overrides,
    }
    started = time.perf_counter()
    run("training", config_file=config_files("train.json"), **settings)
    trained = time.perf_counter()
    data = load_scoring_data(
        str(job.folder),
        settings.get("ieca_mode", "spatial"),
        job.split["valid"],
        bool(settings.get("use_pcm", False)),
        overrides={"image_root": job.image_root},
    )
    table = pd.DataFrame(
        {
            "image": [record["image"] for record in data.records],
            "patient": [record.get(schema.PATIENT_ID) for record in data.records],
            **{column: [record.get(column) for record in data.records] for column in schema.DEMOGRAPHIC_COLUMNS},
            "label": data.labels,
        }
    )
    aurocs: dict[str, dict[str, float]] = {}
    columns = list(schema.DEMOGRAPHIC_COLUMNS)
    normal = data.labels == 0
    for schedule in job.schedules:
        scores = score_images(schedule, data, seed=job.seed)
        aurocs[schedule.name] = {}
        for score, values in scores.items():
            table[f"{schedule.name}|{score}"] = values
            aurocs[schedule.name][score] = image_metrics(data.labels, values, score)["auroc"]
            normalised = EHRNormalisedScore(columns).fit(table[normal], values[normal])(table, values)
            aurocs[schedule.name][score + "_ehr_normalised"] = image_metrics(data.labels, normalised, score)["auroc"]
    write_csv_atomic(table, job.folder / SCORES_FILE)
    result = {
        "config": job.name,
        "seed": job.seed,
        "overrides": dict(job.overrides),
        "train_seconds": round(trained - started, 1),
        "score_seconds": round(time.perf_counter() - trained, 1),
        "device": str(data.device),
        "validation_auroc": aurocs,
    }
    write_json_atomic(result, job.folder / RESULT_FILE)
    return result


def summarise(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (config, schedule, score): validation AUROC mean, SD and count over seeds, best first."""
    rows = [
        {"config": result["config"], "schedule": schedule, "score": score, "seed": result["seed"], "auroc": auroc}
        for result in results
        for schedule, per_score in result["validation_auroc"].items()
        for score, auroc in per_score.items()
    ]
    table = pd.DataFrame(rows).groupby(["config", "schedule", "score"])["auroc"].agg(["mean", "std", "count"])
    return table.reset_index().sort_values("mean", ascending=False, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset-csv", required=True, help="labelled CheXpert-style CSV (Path, Sex, Age, AP/PA, No Finding, patient)"
    )
    parser.add_argument(
        "--image-root", default=None, help="folder the CSV's paths are relative to (default: the CSV's)"
    )
    parser.add_argument("--work-dir", required=True, help="folder for splits, models and results")
    parser.add_argument(
        "--config",
        type=parse_config,
        action="append",
        required=True,
        dest="configs",
        help="name=JSON train.json overrides; repeat for each candidate",
    )
    parser.add_argument("--schedules", type=parse_schedule, nargs="+", default=[parse_schedule("stochastic:50:5")])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the patient split (the main job's default)")
    parser.add_argument(
        "--set",
        type=json.loads,
        default={},
        dest="common",
        help="JSON train.json overrides for every config, e.g. '{\"max_epochs\": 40}'",
    )
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once, each in its own process")
    args = parser.parse_args(argv)

    work_dir = Path(args.work_dir)
    split = {
        name: str(path)
        for name, path in write_patient_splits(args.dataset_csv, work_dir / "split", seed=args.split_seed).items()
    }
    image_root = args.image_root or str(Path(args.dataset_csv).parent)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    # seed-major order: a run stopped early still has every configuration for the first seeds
    jobs = [
        Job(name, seed, overrides, tuple(args.schedules), split, image_root, str(work_dir), threads, args.common)
        for seed in args.seeds
        for name, overrides in args.configs
    ]
    log = logging.getLogger(__name__)
    if args.workers == 1:
        results = [run_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_job, jobs))
    for result in results:
        log.info("%s seed %d: trained in %.0f s", result["config"], result["seed"], result["train_seconds"])
    summary = summarise(results)
    write_csv_atomic(summary, work_dir / "summary.csv")
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(summary.head(60).to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    print(
        f"\nper-image validation scores: {work_dir}/<config>/seed<k>/{SCORES_FILE}; summary: {work_dir / 'summary.csv'}"
    )
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
