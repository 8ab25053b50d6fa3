"""Train and evaluate Diff3M and the image-only diffusion baseline on the same split, print one table.

This is the project's main job (the README's first command): on a fresh machine it generates the phantom
dataset, trains each method with the bundle's ``train.json`` (same seed, same split, same backbone), scores the
test split with ``evaluate.json`` and prints AUROC/AUPRC with 95% bootstrap intervals, best F1 and pixel AUROC.
Every method differs only in bundle overrides, so any row can be reproduced with ``python -m monai.bundle``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import run

from monai_diff3m.engines.checkpoints import checkpoint_name
from monai_diff3m.io import write_json_atomic
from monai_diff3m.packaged_bundle import config_files

#: Methods of the comparison: display name -> bundle overrides (the ablation axes of METHOD.md §5).
METHODS: dict[str, dict[str, Any]] = {
    "Diff3M (EHR, pooled IECA)": {"ieca_mode": "pooled"},
    "Diff3M (EHR, spatial IECA)": {"ieca_mode": "spatial"},
    "Image-only diffusion": {"ieca_mode": "none"},
}
DEFAULT_METHODS = ("Diff3M (EHR, spatial IECA)", "Image-only diffusion")


def run_method(overrides: Mapping[str, Any], common: Mapping[str, Any]) -> dict[str, Any]:
    """Train one method, pick its image score on the validation split, and evaluate the test split.

    Choosing the score on validation (METHOD.md §4: "the default is the one that measures best on validation")
    keeps the test numbers unbiased; the returned dict is the test metrics.json plus ``selected_score``, the
    validation AUROCs it was chosen from, and timings.
    """
    settings = {**common, **overrides}
    bundle_root = Path(settings["bundle_root"])
    eval_dir = bundle_root / "eval" / checkpoint_name(settings["ieca_mode"])
    dataset_dir = bundle_root / "data" / "phantoms"
    evaluate = config_files("inference.json", "evaluate.json")
    started = time.perf_counter()
    run("training", config_file=config_files("train.json"), **settings)
    trained = time.perf_counter()
    run("evaluating", config_file=evaluate, test_csv=str(dataset_dir / "valid.csv"), output_dir=str(eval_dir / "valid"),
        **settings)
    validation = json.loads((eval_dir / "valid" / "metrics.json").read_text())
    validated = time.perf_counter()
    run("evaluating", config_file=evaluate, output_dir=str(eval_dir / "test"), **settings)
    tested = time.perf_counter()
    metrics = json.loads((eval_dir / "test" / "metrics.json").read_text())
    metrics["selected_score"] = validation["best_score"]
    metrics["validation_auroc"] = {score: values["auroc"] for score, values in validation["scores"].items()}
    metrics["timing_s"] = {
        "train": round(trained - started, 1),
        "validate": round(validated - trained, 1),
        "test": round(tested - validated, 1),
    }
    metrics["overrides"] = dict(overrides)
    return metrics


def comparison_table(results: Mapping[str, Mapping[str, Any]], score: str | None = None) -> str:
    """A plain-text table of test metrics, one row per method, for ``score`` or each method's validated score."""
    header = (
        f"{'method':<28} {'score':<15} {'AUROC [95% CI]':<22} {'AUPRC [95% CI]':<22} {'best F1':>8} {'pixel AUROC':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        chosen = score or metrics["selected_score"]
        values = metrics["scores"][chosen]
        auroc = f"{values['auroc']:.3f} [{values['auroc_interval'][0]:.3f}, {values['auroc_interval'][1]:.3f}]"
        auprc = f"{values['auprc']:.3f} [{values['auprc_interval'][0]:.3f}, {values['auprc_interval'][1]:.3f}]"
        pixel = metrics.get("pixel", {}).get("pixel_auroc")
        pixel_text = "n/a" if pixel is None else f"{pixel:.3f}"
        lines.append(f"{name:<28} {chosen:<15} {auroc:<22} {auprc:<22} {values['best_f1']:>8.3f} {pixel_text:>12}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle-root", default="bundles/diff3m", help="bundle folder; data, models and eval go here")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.json's max_epochs")
    parser.add_argument(
        "--score", default=None, help="image score for the table; default: each method's best on validation"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default=None, help="JSON file for all results (default: <bundle-root>/eval/comparison.json)"
    )
    args = parser.parse_args(argv)

    common: dict[str, Any] = {"bundle_root": args.bundle_root, "seed": args.seed}
    if args.max_epochs is not None:
        common["max_epochs"] = args.max_epochs
    results = {name: run_method(METHODS[name], common) for name in args.methods}
    output = Path(args.output) if args.output else Path(args.bundle_root) / "eval" / "comparison.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"seed": args.seed, "score": args.score, "results": results}, output)
    print("\nTest split, image level (score chosen on the validation split unless --score is given):")
    print(comparison_table(results, args.score))
    print(f"\nfull results (every score, subgroups, timings): {output}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
