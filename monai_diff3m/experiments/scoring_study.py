"""Image AUROC against the scoring schedule (DDIM steps, noise level L, noising) for one trained model.

Scoring cost is the number of network evaluations per image, so the bundle's default schedule should be the
cheapest one that scores as well as the best: this study scores one labelled split (the phantom validation split
by default, so that choosing does not touch the test split) with every schedule of a grid, and reports

- per schedule: network evaluations per image, wall time and images/s on this device, AUROC with its 95 %
  bootstrap interval and AUPRC, for every image score of ``SCORE_NAMES``;
- the best schedule for ``--score`` and the *recommended* one: the fewest evaluations per image whose AUROC is
  within ``--tolerance`` (0.005) of the best, next to the bundle's current default (``inference.json``, which
  ``evaluate.json`` follows).

Every schedule scores the same preprocessed images with the same seeded noise, so differences between rows are
paired. Results are written after every schedule (``--output``), and a rerun with the same checkpoint, split and
seed skips the schedules already scored, so a long grid (the authors' 798 evaluations per image) can be stopped
and resumed::

    python -m monai_diff3m.experiments.scoring_study [--noise-levels 25 50 100 150 250 400]
        [--steps 5 10 25 50 100 full] [--noising stochastic ddim_inversion] [--with-reference] [--split valid]
        [--score lung_mean]

Without a checkpoint at ``<bundle-root>/models/diff3m_<ieca-mode>_best.pt`` it first trains one with
``train.json`` (as the main job does, on the phantoms by default); ``--use-pcm`` studies the stage-2 checkpoint,
which must exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.bundle import ConfigParser, run

from monai_diff3m.inferers import (
    FULL_SCHEDULE,
    NOISING_MODES,
    REFERENCE_SCHEDULE,
    SCORE_NAMES,
    Diff3MAnomalyInferer,
    ScoringSchedule,
)
from monai_diff3m.io import write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import abnormal_labels, bootstrap_interval, image_metrics
from monai_diff3m.metrics.film_sharpness import laplacian_variance, rank_correlation
from monai_diff3m.packaged_bundle import config_files


def parse_steps(value: str) -> int | None:
    """``"full"`` (every timestep) or a positive step count, for argparse."""
    if value == FULL_SCHEDULE:
        return None
    steps = int(value)
    if steps < 1:
        raise argparse.ArgumentTypeError(f"steps must be a positive integer or {FULL_SCHEDULE!r}, got {value!r}")
    return steps


def schedule_grid(
    noise_levels: Iterable[int], steps: Iterable[int | None], noising_modes: Iterable[str]
) -> list[ScoringSchedule]:
    """Every (noising, L, steps) combination, cheapest first. L steps take every timestep, so a step count of L
    or more is the full schedule (``None``), kept once."""
    schedules = set()
    for noising in noising_modes:
        if noising not in NOISING_MODES:
            raise ValueError(f"noising must be one of {NOISING_MODES}, got {noising!r}")
        for level in noise_levels:
            for count in steps:
                schedules.add(ScoringSchedule(noising, level, None if count is None or count >= level else count))
    return sorted(schedules, key=lambda s: (s.evaluations, s.noising, s.noise_level))


def recommend(
    results: Sequence[Mapping[str, Any]], score: str, tolerance: float
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The best result for ``score`` and the recommended one: the fewest evaluations per image among those within
    ``tolerance`` AUROC of the best (ties on cost go to the higher AUROC)."""
    if not results:
        raise ValueError("no schedule has been scored")
    best = max(results, key=lambda result: result["scores"][score]["auroc"])
    floor = best["scores"][score]["auroc"] - tolerance
    candidates = [result for result in results if result["scores"][score]["auroc"] >= floor]
    chosen = min(candidates, key=lambda result: (result["evaluations"], -result["scores"][score]["auroc"]))
    return best, chosen


def ranking_flips(results: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]], score: str) -> list[str]:
    """Warnings where the schedules' ranking by ``score`` AUROC flips between this split and ``other`` (another
    data set's study): a schedule above chance on one and below on the other, or this split's best schedule in the
    bottom half of the other's. A default must hold on every real set; a flip says the choice follows the data."""
    theirs = {result["name"]: result["scores"][score]["auroc"] for result in other}
    ours = {result["name"]: result["scores"][score]["auroc"] for result in results if result["name"] in theirs}
    if len(ours) < 2:
        return []
    warnings = [
        f"{name}: {score} AUROC {ours[name]:.3f} here but {theirs[name]:.3f} on the other set (chance is 0.5)"
        for name in ours
        if (ours[name] < 0.5) != (theirs[name] < 0.5)
    ]
    best = max(ours, key=ours.__getitem__)
    ranked = sorted(ours, key=theirs.__getitem__, reverse=True)
    if ranked.index(best) >= len(ranked) / 2:
        warnings.append(
            f"the best schedule here, {best} ({ours[best]:.3f}), ranks {ranked.index(best) + 1} of {len(ranked)} on "
            f"the other set ({theirs[best]:.3f}; its best: {ranked[0]}, {theirs[ranked[0]]:.3f})"
        )
    return warnings


@dataclass
class ScoringData:
    """One split, preprocessed once and kept in memory, with what scoring it needs from the bundle; ``records`` and
    ``labels`` are in batch order."""

    network: torch.nn.Module
    scheduler: Any
    batches: list[dict[str, Any]]
    #: the bundle's ``prepare_batch``: (image, label, args, the network's keyword inputs) of a batch
    prepare_batch: Any
    records: list[dict[str, Any]]
    labels: np.ndarray
    device: torch.device
    amp: bool
    smoothing_sigma: float
    use_pcm: bool
    image_range: tuple[float, float]
    clip_range: tuple[float, float]
    default: ScoringSchedule
    checkpoint: str
    #: each image's Laplacian variance (:mod:`~monai_diff3m.metrics.film_sharpness`), in batch order
    sharpness: np.ndarray


def load_scoring_data(
    bundle_root: str,
    ieca_mode: str,
    split_csv: str,
    use_pcm: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> ScoringData:
    """Parse ``evaluate.json`` for ``split_csv`` and return its network, scheduler, batches and labels.

    ``overrides`` are further ``evaluate.json`` keys (``image_root``, ``ckpt_dir``, ...), as on the command line.
    """
    parser = ConfigParser()
    parser.read_config(config_files("inference.json", "evaluate.json"))
    settings = {"bundle_root": bundle_root, "ieca_mode": ieca_mode, "use_pcm": use_pcm, "test_csv": split_csv}
    parser.update({**settings, **(overrides or {})})
    records = {str(record["source"]): record for record in parser.get_parsed_content("records")}
    batches = list(parser.get_parsed_content("dataloader"))
    ordered = [records[source] for batch in batches for source in batch["source"]]
    return ScoringData(
        network=parser.get_parsed_content("network").eval(),
        scheduler=parser.get_parsed_content("scheduler"),
        batches=batches,
        prepare_batch=parser.get_parsed_content("prepare_batch"),
        records=ordered,
        labels=abnormal_labels(pd.DataFrame(ordered)),
        device=parser.get_parsed_content("device"),
        amp=bool(parser.get_parsed_content("amp")),
        smoothing_sigma=float(parser.get_parsed_content("smoothing_sigma")),
        use_pcm=use_pcm,
        image_range=tuple(parser.get_parsed_content("image_range")),
        clip_range=tuple(parser.get_parsed_content("x0_clip_range")),
        default=ScoringSchedule(
            *(
                parser.get_parsed_content(key)
                for key in ("noising", "noise_level", "num_inference_steps", "ddim_indexing")
            )
        ),
        checkpoint=str(parser.get_parsed_content("checkpoint")),
        sharpness=np.concatenate([laplacian_variance(torch.as_tensor(batch["image"])).numpy() for batch in batches]),
    )


def score_images(schedule: ScoringSchedule, data: ScoringData, seed: int = 0) -> dict[str, np.ndarray]:
    """Every image score of ``SCORE_NAMES`` for every image of ``data`` (in batch order) under ``schedule``."""
    inferer = Diff3MAnomalyInferer(
        data.scheduler,
        noise_level=schedule.noise_level,
        num_steps=schedule.num_steps,
        noising=schedule.noising,
        smoothing_sigma=data.smoothing_sigma,
        seed=seed,
        use_pcm=data.use_pcm,
        image_range=data.image_range,
        clip_range=data.clip_range,
        indexing=schedule.indexing,
        autocast_dtype=torch.bfloat16 if data.amp else None,
    )
    scores: dict[str, list[np.ndarray]] = {name: [] for name in SCORE_NAMES}
    for batch in data.batches:
        image, _, _, network_inputs = data.prepare_batch(batch, data.device)
        result = inferer(image, data.network, **network_inputs)
        for name in SCORE_NAMES:
            scores[name].append(result["scores"][name].float().cpu().numpy())
    return {name: np.concatenate(values) for name, values in scores.items()}


def score_schedule(
    schedule: ScoringSchedule, data: ScoringData, seed: int = 0, num_bootstrap: int = 1000
) -> dict[str, Any]:
    """Score every image of ``data`` with ``schedule``; return its cost and per-score image metrics."""
    started = time.perf_counter()
    scores = score_images(schedule, data, seed)
    seconds = time.perf_counter() - started
    metrics = {}
    for name, joined in scores.items():
        metrics[name] = {
            **image_metrics(data.labels, joined, name),
            "auroc_interval": bootstrap_interval(data.labels, joined, "auroc", num_samples=num_bootstrap, seed=seed),
            "sharpness_correlation": rank_correlation(joined, data.sharpness),
        }
    return {
        **asdict(schedule),
        "name": schedule.name,
        "evaluations": schedule.evaluations,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(data.labels) / seconds, 3),
        "scores": metrics,
    }


def study_table(
    results: Sequence[Mapping[str, Any]], score: str, best: Mapping[str, Any], chosen: Mapping[str, Any]
) -> str:
    """A Markdown table, cheapest first: schedule, evaluations/image, images/s, AUROC [95% CI], AUPRC."""
    lines = [
        f"| schedule | evaluations / image | images/s | {score} AUROC [95% CI] | AUPRC | ρ with sharpness |",
        "|---|---|---|---|---|---|",
    ]
    for result in sorted(results, key=lambda r: (r["evaluations"], r["name"])):
        values = result["scores"][score]
        low, high = values["auroc_interval"]
        marks = [mark for mark, row in (("best", best), ("recommended", chosen)) if row["name"] == result["name"]]
        label = result["name"] + (f" ({', '.join(marks)})" if marks else "")
        lines.append(
            f"| {label} | {result['evaluations']} | {result['images_per_second']:.2f} | "
            f"{values['auroc']:.3f} [{low:.3f}, {high:.3f}] | {values['auprc']:.3f} | "
            f"{values.get('sharpness_correlation', float('nan')):+.2f} |"
        )
    return "\n".join(lines)


def auroc_grid(results: Sequence[Mapping[str, Any]], score: str) -> str:
    """A Markdown grid of AUROC, one row per (noising, L, indexing), one column per step count, ``-`` if not scored."""
    columns = sorted({r["num_steps"] for r in results if r["num_steps"] is not None}) + [None]
    rows = sorted({(r["noising"], r["noise_level"], r.get("indexing", "aligned")) for r in results})
    auroc = {
        (r["noising"], r["noise_level"], r.get("indexing", "aligned"), r["num_steps"]): r["scores"][score]["auroc"]
        for r in results
    }
    header = " | ".join(FULL_SCHEDULE if steps is None else str(steps) for steps in columns)
    lines = [f"| {score} AUROC | {header} |", "|---" * (len(columns) + 1) + "|"]
    for noising, level, indexing in rows:
        cells = [auroc.get((noising, level, indexing, steps)) for steps in columns]
        text = " | ".join("-" if value is None else f"{value:.3f}" for value in cells)
        label = f"{noising} L={level}" + ("" if indexing == "aligned" else f" ({indexing} indexing)")
        lines.append(f"| {label} | {text} |")
    return "\n".join(lines)


def _previous_results(output: Path, identity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Results of an earlier run with the same checkpoint (path and modification time), split and seed, to resume."""
    if not output.exists():
        return []
    previous = json.loads(output.read_text())
    if any(previous.get(key) != value for key, value in identity.items()):
        return []
    return list(previous.get("results", []))


def ensure_checkpoint(bundle_root: str, ieca_mode: str, seed: int) -> Path:
    """The stage-1 model to study (the path ``evaluate.json`` scores); trained with ``train.json`` when missing."""
    parser = ConfigParser()
    parser.read_config(config_files("inference.json", "evaluate.json"))
    parser.update({"bundle_root": bundle_root, "ieca_mode": ieca_mode, "use_pcm": False})
    checkpoint = Path(parser.get_parsed_content("checkpoint"))
    if not checkpoint.exists():
        logging.getLogger(__name__).info("no %s: training one with train.json", checkpoint)
        run("training", config_file=config_files("train.json"), bundle_root=bundle_root, ieca_mode=ieca_mode, seed=seed)
    return checkpoint


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle-root", default="bundles/diff3m", help="bundle folder with data/, models/ and eval/")
    parser.add_argument("--ieca-mode", default="spatial", choices=["pooled", "spatial", "none"])
    parser.add_argument("--use-pcm", action="store_true", help="study the stage-2 (PCM) checkpoint; train it first")
    parser.add_argument(
        "--split", default="valid", help="phantom split to score (valid or test) when --csv is not given"
    )
    parser.add_argument("--csv", default=None, help="labelled dataset CSV to score instead of a phantom split")
    parser.add_argument("--image-root", default=None, help="folder the CSV's paths are relative to (default: its own)")
    parser.add_argument("--noise-levels", type=int, nargs="+", default=[25, 50, 100, 150, 250, 400])
    parser.add_argument(
        "--steps",
        type=parse_steps,
        nargs="+",
        default=[5, 10, 25, 50, 100, None],
        help=f"DDIM step counts; {FULL_SCHEDULE!r} = every timestep from L down to 0",
    )
    parser.add_argument("--noising", nargs="+", default=["stochastic"], choices=list(NOISING_MODES))
    parser.add_argument(
        "--with-reference",
        action="store_true",
        help=f"also score the authors' schedule ({REFERENCE_SCHEDULE.name}, "
        f"{REFERENCE_SCHEDULE.evaluations} evaluations per image)",
    )
    parser.add_argument(
        "--score", default="lung_mean", choices=list(SCORE_NAMES), help="image score the choice is made on"
    )
    parser.add_argument("--tolerance", type=float, default=0.005, help="AUROC a cheaper schedule may lose to the best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compare-with",
        default=None,
        help="another data set's study JSON: warn where the schedules' ranking flips between the two sets",
    )
    parser.add_argument(
        "--output", default=None, help="JSON file (default: <bundle-root>/eval/scoring_study_<split>.json)"
    )
    args = parser.parse_args(argv)

    if not args.use_pcm:
        ensure_checkpoint(args.bundle_root, args.ieca_mode, args.seed)
    split_csv = args.csv or str(Path(args.bundle_root) / "data" / "phantoms" / f"{args.split}.csv")
    overrides = {"image_root": args.image_root} if args.image_root else {}
    data = load_scoring_data(args.bundle_root, args.ieca_mode, split_csv, args.use_pcm, overrides)
    schedules = schedule_grid(args.noise_levels, args.steps, args.noising)
    if args.with_reference:
        schedules.append(REFERENCE_SCHEDULE)
    output = (
        Path(args.output)
        if args.output
        else Path(args.bundle_root) / "eval" / f"scoring_study_{Path(split_csv).stem}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    # the modification time tells a retrained checkpoint at the same path from the one already studied
    checkpoint_modified = Path(data.checkpoint).stat().st_mtime_ns
    identity = {
        "checkpoint": data.checkpoint,
        "checkpoint_modified": checkpoint_modified,
        "split_csv": split_csv,
        "seed": args.seed,
    }
    header = {**identity, "device": str(data.device), "torch": torch.__version__}
    results = _previous_results(output, identity)
    done = {result["name"] for result in results}
    log = logging.getLogger(__name__)
    for schedule in schedules:
        if schedule.name in done:
            continue
        result = score_schedule(schedule, data, seed=args.seed)
        results.append(result)
        done.add(schedule.name)
        log.info(
            "%s: %d evaluations/image, %.1f s, %s AUROC %.3f",
            schedule.name,
            schedule.evaluations,
            result["seconds"],
            args.score,
            result["scores"][args.score]["auroc"],
        )
        write_json_atomic({**header, "results": results}, output)
    best, chosen = recommend(results, args.score, args.tolerance)
    summary = {
        **header,
        "n": int(data.labels.size),
        "n_abnormal": int(data.labels.sum()),
        "sharpness_auroc": image_metrics(data.labels, data.sharpness, "sharpness")["auroc"],
        "score": args.score,
        "tolerance": args.tolerance,
        "best": best["name"],
        "recommended": chosen["name"],
        "bundle_default": data.default.name,
        "results": results,
    }
    if args.compare_with:
        other = json.loads(Path(args.compare_with).read_text())["results"]
        summary["ranking_warnings"] = ranking_flips(results, other, args.score)
    write_json_atomic(summary, output)
    print(
        f"\n{split_csv}: {summary['n']} images ({summary['n_abnormal']} abnormal), "
        f"device {data.device}, score {args.score}"
    )
    print(auroc_grid(results, args.score))
    print(
        f"\nsharpness (Laplacian variance) alone reads AUROC {summary['sharpness_auroc']:.3f}; a score with a "
        "large positive ρ below measures sharpness, not the anomaly"
    )
    print()
    print(study_table(results, args.score, best, chosen))
    print(
        f"\nbest: {best['name']}; recommended (fewest evaluations within {args.tolerance} AUROC of the best): "
        f"{chosen['name']}; bundle default: {data.default.name}"
    )
    for warning in summary.get("ranking_warnings", []):
        print(f"WARNING, ranking flips against {args.compare_with}: {warning}")
    print(f"full results (every score): {output}")
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
