"""How much does an EHR model's anomaly score depend on the EHR? Its own EHR against another patient's.

An EHR-conditioned model can only read more than its image-only twin if the EHR moves its normal-looking twin. This
script scores one labelled split twice with one checkpoint: with each film's own EHR, and with the EHR rows permuted
across films (seeded; every EHR column of the CSV moves together, so each film gets another real patient's record).
Per schedule and score it prints:

- the AUROC with the own and with the permuted EHR: if the permuted EHR reads as well, the EHR carries no anomaly
  information through the twin;
- the rank correlation of the two score columns, and the median change of a film's score relative to the score,
  beside the spread of the scores between films (their coefficient of variation): the EHR's lever on the score.

Score validation films, not a test split: this is a diagnostic, but it reads labels.

    python benchmarks/ehr_lever.py --checkpoint models/diff3m_spatial_best.pt --csv valid.csv --image-root FILMS
        [--schedules ddim_inversion:200:10 stochastic:50:5] [--output lever.json]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from monai_diff3m import schema
from monai_diff3m.checkpoints import checkpoint_metadata, fixed_settings
from monai_diff3m.experiments.scoring_study import load_scoring_data, score_images
from monai_diff3m.inferers.ddim import ScoringSchedule
from monai_diff3m.io import write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import image_metrics

SCORES = ("lowpass_mse", "p99_smoothed", "mse")


def permuted_ehr_csv(csv: Path, output: Path, seed: int) -> Path:
    """``csv`` with its EHR columns' rows permuted together across films (paths and labels stay)."""
    table = pd.read_csv(csv, dtype={schema.PATH: str})
    columns = [column for column in schema.EHR_COLUMNS if column in table.columns]
    order = np.random.default_rng(seed).permutation(len(table))
    table[columns] = table[columns].to_numpy()[order]
    table.to_csv(output, index=False)
    return output


def parse_schedule(text: str) -> ScoringSchedule:
    """``noising:L:steps``, e.g. ``ddim_inversion:200:10``."""
    noising, noise_level, steps = text.split(":")
    return ScoringSchedule(noising, int(noise_level), int(steps))


def lever(own: np.ndarray, permuted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUROC with each EHR, rank correlation, median relative change and the between-film spread of one score."""
    return {
        "auroc_own": image_metrics(labels, own)["auroc"],
        "auroc_permuted": image_metrics(labels, permuted)["auroc"],
        "rank_correlation": float(spearmanr(own, permuted)[0]),
        "median_relative_change": float(np.median(np.abs(own - permuted) / np.abs(own))),
        "between_film_cv": float(np.std(own) / np.mean(np.abs(own))),
    }


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an EHR model's checkpoint (ieca_mode spatial or pooled)")
    parser.add_argument("--csv", required=True, type=Path, help="labelled validation CSV with the EHR columns")
    parser.add_argument("--image-root", default=None, help="folder the CSV's paths are relative to (default: its own)")
    parser.add_argument(
        "--schedules", nargs="+", type=parse_schedule, default=[parse_schedule("ddim_inversion:200:10")]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutation and of the scoring noise")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)

    overrides = {"checkpoint": args.checkpoint, "image_root": args.image_root or str(args.csv.parent)}
    ieca_mode = fixed_settings(checkpoint_metadata(args.checkpoint))["ieca_mode"]
    if ieca_mode == "none":
        raise SystemExit(f"{args.checkpoint} is an image-only model (ieca_mode none): it reads no EHR")
    with tempfile.TemporaryDirectory() as scratch:
        permuted_csv = permuted_ehr_csv(args.csv, Path(scratch) / "permuted.csv", args.seed)
        data = {
            name: load_scoring_data(scratch, ieca_mode, str(path), overrides=overrides)
            for name, path in (("own", args.csv), ("permuted", permuted_csv))
        }
        if [record["image"] for record in data["own"].records] != [
            record["image"] for record in data["permuted"].records
        ]:
            raise RuntimeError("the two scorings did not read the same films in the same order")
        results = []
        for schedule in args.schedules:
            scores = {name: score_images(schedule, split, seed=args.seed) for name, split in data.items()}
            row = {"schedule": schedule.name}
            for score in SCORES:
                row[score] = lever(scores["own"][score], scores["permuted"][score], data["own"].labels)
                print(
                    f"{schedule.name:<32} {score:<13} AUROC own {row[score]['auroc_own']:.3f}, "
                    f"permuted {row[score]['auroc_permuted']:.3f}; rank correlation "
                    f"{row[score]['rank_correlation']:.3f}; median change {row[score]['median_relative_change']:.1%} "
                    f"of a film's score (spread between films {row[score]['between_film_cv']:.0%})",
                    flush=True,
                )
            results.append(row)
            if args.output:
                write_json_atomic(results, args.output)
    return results


if __name__ == "__main__":
    main()
