"""Train and evaluate Diff3M, the image-only diffusion baseline and an EHR-only classifier on one split; one table.

This is the project's main job (the README's first command). With no dataset it generates the phantom dataset; with
``--dataset-csv`` (any labelled CheXpert-style CSV: ``Path, Sex, Age, AP/PA, No Finding`` and a patient column or
CheXpert/MIMIC paths) it makes a seeded patient-level split (:mod:`monai_diff3m.data.splits`: training films are
normals only, validation and test hold both classes). For every training seed each method is trained with the
bundle's ``train.json``, its image score is chosen on the validation split (highest AUROC), and the test split is
scored with ``evaluate.json``. Every method differs only in bundle overrides, so any row can be reproduced with
``python -m monai.bundle``. The table also has:

- **EHR only**: a logistic regression on the EHR the model sees (sex, age, view; the MIMIC measurements when the
  CSV has them), no image, fitted on the validation split and scored on the test split. A method that does not beat
  it is not reading the image.
- **EHR-normalised** rows: each image method's validated score, read as how far it lies above what *normal*
  validation films of the same sex, age and view score (:class:`~monai_diff3m.metrics.ehr_baselines.EHRNormalisedScore`;
  no abnormal label is used).

Intervals are 95 % bootstrap intervals over patients (images when the CSV names no patient). With several
``--seeds`` the table adds each row's test AUROC over the seeds (mean ± SD, min-max): a rerun differs by about that.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.bundle import run

from monai_diff3m import schema
from monai_diff3m.checkpoints import checkpoint_name, record_reference_scores
from monai_diff3m.data.splits import write_patient_splits
from monai_diff3m.io import write_json_atomic
from monai_diff3m.metrics.anomaly_metrics import (
    abnormal_labels,
    below_chance_warnings,
    evaluate_table,
    image_metrics,
    paired_bootstrap_difference,
    present_subgroups,
)
from monai_diff3m.metrics.ehr_baselines import DemographicsClassifier, EHRNormalisedScore
from monai_diff3m.packaged_bundle import config_files

logger = logging.getLogger(__name__)

#: The baseline every EHR method is compared with, paired, on the same test films.
IMAGE_ONLY = "Image-only diffusion"
#: Methods of the comparison: display name -> bundle overrides (the ablation axes of the method's evaluation).
METHODS: dict[str, dict[str, Any]] = {
    "Diff3M (EHR, pooled IECA)": {"ieca_mode": "pooled"},
    "Diff3M (EHR, spatial IECA)": {"ieca_mode": "spatial"},
    IMAGE_ONLY: {"ieca_mode": "none"},
}
DEFAULT_METHODS = ("Diff3M (EHR, spatial IECA)", IMAGE_ONLY)
EHR_ONLY = "EHR only (logistic regression, no image)"
EHR_ONLY_SCORE = "ehr_logistic"
NORMALISED_SUFFIX = "_ehr_normalised"
#: Columns naming the finding of an abnormal film: NIH/CheXpert-style ``Finding`` text, the phantoms' ``Lesion``.
FINDING_COLUMNS = ("Finding", schema.LESION)


@dataclass
class SplitDataset:
    """One patient-level split and the bundle overrides that train and score on it."""

    name: str
    csvs: dict[str, str]
    train_overrides: dict[str, Any] = field(default_factory=dict)
    score_overrides: dict[str, Any] = field(default_factory=dict)
    #: bundle configs merged after train.json / inference.json + evaluate.json (the phantom demo's settings)
    overlays: tuple[str, ...] = ()


def phantom_dataset(bundle_root: str) -> SplitDataset:
    """The bundle's default phantoms; ``train.json`` generates them on first use at ``<bundle_root>/data/phantoms``.

    The bundle's defaults are chosen on real films; ``phantom_demo.json`` restores the settings measured on the
    phantoms (fixed intensities, no EMA, stochastic noising to L=50 in 5 steps) and trains 10 epochs, which keeps the
    main job within minutes on a CPU.
    """
    folder = Path(bundle_root) / "data" / "phantoms"
    csvs = {split: str(folder / f"{split}.csv") for split in ("train", "valid", "test")}
    return SplitDataset("phantoms", csvs, overlays=("phantom_demo.json",))


def csv_dataset(
    csv_path: str, image_root: str | None, bundle_root: str, split_seed: int, image_size: int | None
) -> SplitDataset:
    """A patient-level split of ``csv_path`` written under ``<bundle_root>/data/<name>_split<seed>``.

    The EHR groups follow the CSV: demographics always, every other group (the MIMIC measurements) when it has all
    of that group's columns.
    """
    name = f"{Path(csv_path).parent.name}_{Path(csv_path).stem}"
    csvs = write_patient_splits(csv_path, Path(bundle_root) / "data" / f"{name}_split{split_seed}", seed=split_seed)
    columns = pd.read_csv(csv_path, nrows=0).columns
    groups = [
        group
        for group in schema.ehr_groups()
        if group == "demographics" or set(schema.ehr_columns([group])) <= set(columns)
    ]
    root = image_root or str(Path(csv_path).parent)
    train: dict[str, Any] = {
        "train_csv": str(csvs["train"]),
        "val_csv": str(csvs["valid"]),
        "image_root": root,
        "ehr_groups": groups,
    }
    if image_size is not None:
        train["image_size"] = image_size
    return SplitDataset(name, {split: str(path) for split, path in csvs.items()}, train, {"image_root": root})


def run_method(
    overrides: Mapping[str, Any], dataset: SplitDataset, seed: int, common: Mapping[str, Any]
) -> dict[str, Any]:
    """Train one method, choose its image score on validation, and evaluate the test split.

    Returns the test ``metrics.json`` plus ``selected_score``, the validation AUROCs it was chosen from, timings,
    and the paths of the validation and test ``scores.csv`` (for the EHR rows).
    """
    settings = {**common, "seed": seed, **dataset.train_overrides, **overrides}
    mode = settings["ieca_mode"]
    bundle_root = Path(settings["bundle_root"])
    run_dir = f"{dataset.name}/seed{seed}"
    ckpt_dir = str(bundle_root / "models" / run_dir)
    name = checkpoint_name(mode)
    eval_dir = bundle_root / "eval" / run_dir / name
    scoring = {
        "bundle_root": str(bundle_root),
        "ckpt_dir": ckpt_dir,
        "ieca_mode": mode,
        "seed": seed,
        "overwrite": True,  # the main job retrained this method: its own earlier evaluation is replaced
        **dataset.score_overrides,
    }
    started = time.perf_counter()
    run(
        "training",
        config_file=config_files("train.json", *dataset.overlays),
        ckpt_dir=ckpt_dir,
        run_name=f"{run_dir}/{name}",
        **settings,
    )
    trained = time.perf_counter()
    for split in ("valid", "test"):
        run(
            "evaluating",
            config_file=config_files("inference.json", "evaluate.json", *dataset.overlays),
            test_csv=dataset.csvs[split],
            output_dir=str(eval_dir / split),
            run_name=f"{run_dir}/{name}",
            eval_name=split,
            **scoring,
        )
        if split == "valid":  # its normals become the reference range of anomaly_score: test gets percentiles
            schedule = json.loads((eval_dir / "valid" / "metrics.json").read_text())["schedule"]
            record_reference_scores(Path(ckpt_dir) / f"{name}_best.pt", eval_dir / "valid" / "scores.csv", schedule)
    tested = time.perf_counter()
    validation = json.loads((eval_dir / "valid" / "metrics.json").read_text())
    metrics = json.loads((eval_dir / "test" / "metrics.json").read_text())
    metrics["selected_score"] = validation["best_score"]
    metrics["validation_auroc"] = {score: values["auroc"] for score, values in validation["scores"].items()}
    metrics["warnings"] = below_chance_warnings(validation, [metrics["selected_score"]])
    for warning in metrics["warnings"]:
        logger.warning("%s, seed %d, validation split: %s", settings["ieca_mode"], seed, warning)
    metrics["timing_s"] = {"train": round(trained - started, 1), "score": round(tested - trained, 1)}
    metrics["overrides"] = dict(overrides)
    metrics["score_tables"] = {split: str(eval_dir / split / "scores.csv") for split in ("valid", "test")}
    test = pd.read_csv(metrics["score_tables"]["test"])
    metrics["one_film_per_patient"] = one_film_per_patient_metrics(test, metrics["selected_score"], seed)
    return metrics


def one_film_per_patient_metrics(
    test: pd.DataFrame, score: str, seed: int, num_bootstrap: int = 1000
) -> dict[str, Any]:
    """``score``'s test metrics on each patient's first film only (lowest image path: NIH's follow-up ``_000``).

    A sensitivity check, not a second choice: serial films of a few patients (bedside series in intensive care) can
    make up much of a split, and every film-level figure then weighs those patients by their film count.
    """
    if schema.PATIENT_ID not in test.columns or test[schema.PATIENT_ID].isna().any():
        return {}
    first = test.sort_values("image").groupby(schema.PATIENT_ID, sort=False).head(1)
    labels = abnormal_labels(first)
    if labels.min() == labels.max():
        return {}
    metrics = evaluate_table(first, [score], groups=[], num_samples=num_bootstrap, seed=seed)
    return {"n": metrics["n"], "n_abnormal": metrics["n_abnormal"], **metrics["scores"][score]}


def has_informative_ehr(csv_path: str, columns: Sequence[str]) -> bool:
    """Whether any of ``columns`` takes two or more values in ``csv_path``: the ZhangLab set has no sex or age and
    one view for every film, from which no EHR row can learn anything."""
    table = pd.read_csv(csv_path, dtype=str)
    return any(table[column].nunique(dropna=True) > 1 for column in columns if column in table.columns)


def ehr_only_metrics(
    valid: pd.DataFrame, test: pd.DataFrame, columns: Sequence[str], num_bootstrap: int, seed: int
) -> dict[str, Any]:
    """The EHR-only row: logistic regression fitted on the validation split, evaluated on the test split."""
    classifier = DemographicsClassifier(columns).fit(valid, abnormal_labels(valid))
    test = test.assign(**{EHR_ONLY_SCORE: classifier.predict(test)})
    metrics = evaluate_table(
        test, [EHR_ONLY_SCORE], groups=present_subgroups(test), num_samples=num_bootstrap, seed=seed
    )
    metrics["selected_score"] = EHR_ONLY_SCORE
    metrics["one_film_per_patient"] = one_film_per_patient_metrics(test, EHR_ONLY_SCORE, seed, num_bootstrap)
    metrics["coefficients"] = dict(zip(_feature_names(classifier), classifier.model.coef_[0].round(4).tolist()))
    return metrics


def normalised_metrics(
    valid: pd.DataFrame, test: pd.DataFrame, score: str, columns: Sequence[str], num_bootstrap: int, seed: int
) -> dict[str, Any]:
    """``score`` read relative to normal validation films of the same EHR, evaluated on the test split."""
    normal = valid[abnormal_labels(valid) == 0]
    normaliser = EHRNormalisedScore(columns).fit(normal, normal[score].to_numpy())
    name = score + NORMALISED_SUFFIX
    test = test.assign(**{name: normaliser(test, test[score].to_numpy())})
    valid = valid.assign(**{name: normaliser(valid, valid[score].to_numpy())})
    metrics = evaluate_table(test, [name], groups=present_subgroups(test), num_samples=num_bootstrap, seed=seed)
    metrics["selected_score"] = name
    metrics["one_film_per_patient"] = one_film_per_patient_metrics(test, name, seed, num_bootstrap)
    metrics["validation_auroc"] = {name: image_metrics(abnormal_labels(valid), valid[name].to_numpy(), name)["auroc"]}
    return metrics


def finding_metrics(
    scores: pd.DataFrame, test_csv: str, image_root: str | None, score: str
) -> dict[str, dict[str, float]]:
    """AUROC of ``score`` for each finding against all normal test films (``Finding`` split at ``|``, or ``Lesion``)."""
    table = pd.read_csv(test_csv, dtype={schema.PATH: str})
    column = next((name for name in FINDING_COLUMNS if name in table.columns), None)
    if column is None:
        return {}
    root = Path(image_root) if image_root else Path(test_csv).parent
    findings = dict(zip((str(root / path) for path in table[schema.PATH]), table[column].fillna("").astype(str)))
    labels = abnormal_labels(scores)
    per_image = [findings.get(str(image), "") for image in scores["image"]]
    result = {}
    for finding in sorted({name for text in per_image for name in text.split("|") if name and name != "No Finding"}):
        rows = np.array([labels[i] == 0 or finding in text.split("|") for i, text in enumerate(per_image)])
        positives = int(labels[rows].sum())
        if positives and positives < rows.sum():
            auroc = image_metrics(labels[rows], scores[score].to_numpy()[rows], f"{score} ({finding})")["auroc"]
            result[finding] = {"auroc": auroc, "n_abnormal": positives}
    return result


def _feature_names(classifier: DemographicsClassifier) -> list[str]:
    names = []
    for column in classifier.features.columns:
        names.append({schema.SEX: "male", schema.VIEW: "AP"}.get(column, column))
        if column not in (schema.SEX, schema.VIEW, schema.AGE):
            names.append(f"{column} missing")
    return names


def paired_difference_to_image_only(
    rows: Mapping[str, Mapping[str, Any]], name: str, num_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Test AUROC of method ``name`` minus the image-only model's, each with its validated score, on the same films.

    The question an EHR model must answer is whether it reads more than its image-only twin. Both are scored on one
    test split, so a paired bootstrap (same patients in every resample) tells that apart where two overlapping
    unpaired intervals cannot.
    """
    method, baseline = rows[name], rows[IMAGE_ONLY]
    table = pd.read_csv(method["score_tables"]["test"])
    reference = pd.read_csv(baseline["score_tables"]["test"])[["image", baseline["selected_score"]]]
    joined = table.merge(reference.rename(columns={baseline["selected_score"]: "reference"}), on="image")
    if not len(joined) == len(table) == len(reference):
        raise ValueError(f"{name} and {IMAGE_ONLY} scored different test films ({len(table)} and {len(reference)})")
    patients = joined.get(schema.PATIENT_ID)
    clusters = None if patients is None or patients.isna().any() else patients.to_numpy()
    difference = paired_bootstrap_difference(
        abnormal_labels(joined),
        joined[method["selected_score"]].to_numpy(),
        joined["reference"].to_numpy(),
        num_samples=num_bootstrap,
        seed=seed,
        clusters=clusters,
    )
    return {"scores": [method["selected_score"], baseline["selected_score"]], **difference}


def seed_spread(aurocs: Sequence[float]) -> str:
    """``mean ± SD (min-max)`` of test AUROCs over seeds, or the one value."""
    if len(aurocs) == 1:
        return f"{aurocs[0]:.3f}"
    values = np.asarray(aurocs)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} ({values.min():.3f}-{values.max():.3f})"


def comparison_table(results: Mapping[str, Mapping[str, Any]], score: str | None = None) -> str:
    """A plain-text table of test metrics, one row per method, for ``score`` or each method's validated score.

    Columns added when they apply: the AUROC on each patient's first film, and the test AUROC over training seeds.
    """
    spread = any(len(metrics.get("seed_auroc", [])) > 1 for metrics in results.values())
    first_film = any(metrics.get("one_film_per_patient") for metrics in results.values())
    header = (
        f"{'method':<44} {'score':<28} {'AUROC [95% CI]':<22} {'AUPRC [95% CI]':<22} {'best F1':>8} {'pixel AUROC':>12}"
        + (f"  {'AUROC, 1st film/patient':<24}" if first_film else "")
        + ("  AUROC over seeds" if spread else "")
    )
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        chosen = score if score in metrics["scores"] else metrics["selected_score"]
        values = metrics["scores"][chosen]
        auroc = f"{values['auroc']:.3f} [{values['auroc_interval'][0]:.3f}, {values['auroc_interval'][1]:.3f}]"
        auprc = f"{values['auprc']:.3f} [{values['auprc_interval'][0]:.3f}, {values['auprc_interval'][1]:.3f}]"
        pixel = metrics.get("pixel", {}).get("pixel_auroc")
        pixel_text = "n/a" if pixel is None else f"{pixel:.3f}"
        line = f"{name:<44} {chosen:<28} {auroc:<22} {auprc:<22} {values['best_f1']:>8.3f} {pixel_text:>12}"
        if first_film:
            one = metrics.get("one_film_per_patient") or {}
            low, high = one.get("auroc_interval", (0.0, 0.0))
            text = f"{one['auroc']:.3f} [{low:.3f}, {high:.3f}]" if one else "n/a"
            line += f"  {text:<24}"
        if spread:
            line += "  " + seed_spread(metrics["seed_auroc"])
        lines.append(line)
    return "\n".join(lines)


def compare(
    dataset: SplitDataset,
    methods: Sequence[str],
    seeds: Sequence[int],
    common: Mapping[str, Any],
    num_bootstrap: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Every method and EHR row for every seed; each row holds the first seed's full metrics and ``seed_auroc``."""
    results: dict[str, dict[str, Any]] = {}
    ehr_columns = list(schema.ehr_columns(dataset.train_overrides.get("ehr_groups", schema.ehr_groups())))
    image_root = dataset.score_overrides.get("image_root")
    for seed in seeds:
        rows: dict[str, dict[str, Any]] = {}
        for name in methods:
            rows[name] = run_method(METHODS[name], dataset, seed, common)
        first = rows[methods[0]]
        valid, test = (pd.read_csv(first["score_tables"][split]) for split in ("valid", "test"))
        # after training: the phantom splits are generated by the first training run
        with_ehr_rows = has_informative_ehr(dataset.csvs["valid"], ehr_columns)
        if not with_ehr_rows:
            logger.warning("%s: no EHR field varies (%s): no EHR rows", dataset.name, ehr_columns)
        if with_ehr_rows:
            rows[EHR_ONLY] = ehr_only_metrics(valid, test, ehr_columns, num_bootstrap, seed)
        for name in methods:
            tables = {split: pd.read_csv(rows[name]["score_tables"][split]) for split in ("valid", "test")}
            if with_ehr_rows:
                rows[f"{name}, EHR-normalised"] = normalised_metrics(
                    tables["valid"], tables["test"], rows[name]["selected_score"], ehr_columns, num_bootstrap, seed
                )
            rows[name]["findings"] = finding_metrics(
                tables["test"], dataset.csvs["test"], image_root, rows[name]["selected_score"]
            )
        for name in methods:
            if name != IMAGE_ONLY and IMAGE_ONLY in methods:
                rows[name]["paired_vs_image_only"] = paired_difference_to_image_only(rows, name, num_bootstrap, seed)
        for name, metrics in rows.items():
            auroc = metrics["scores"][metrics["selected_score"]]["auroc"]
            if name not in results:
                results[name] = {**metrics, "seed_auroc": [], "seed_paired_vs_image_only": []}
            results[name]["seed_auroc"].append(auroc)
            if "paired_vs_image_only" in metrics:
                results[name]["seed_paired_vs_image_only"].append(metrics["paired_vs_image_only"])
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-csv", default=None, help="labelled CheXpert-style CSV; default: the phantoms")
    parser.add_argument(
        "--image-root", default=None, help="folder the CSV's paths are relative to (default: the CSV's)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="override train.json's image_size")
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.json's max_epochs")
    parser.add_argument("--bundle-root", default="bundles/diff3m", help="bundle folder; data, models and eval go here")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument(
        "--score", default=None, help="image score for the table; default: each method's best on validation"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="training seeds; the table adds the spread over them"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level split of --dataset-csv")
    parser.add_argument(
        "--output", default=None, help="JSON file for all results (default: <bundle-root>/eval/comparison.json)"
    )
    args = parser.parse_args(argv)

    if args.dataset_csv:
        dataset = csv_dataset(args.dataset_csv, args.image_root, args.bundle_root, args.split_seed, args.image_size)
    else:
        dataset = phantom_dataset(args.bundle_root)
    common: dict[str, Any] = {"bundle_root": args.bundle_root}
    if args.max_epochs is not None:
        common["max_epochs"] = args.max_epochs
    results = compare(dataset, args.methods, args.seeds, common)
    output = Path(args.output) if args.output else Path(args.bundle_root) / "eval" / "comparison.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        {"dataset": dataset.name, "split": dataset.csvs, "seeds": args.seeds, "score": args.score, "results": results},
        output,
    )
    print(f"\n{dataset.name}, test split, image level (score chosen on the validation split unless --score is given):")
    print(comparison_table(results, args.score))
    for name, metrics in results.items():
        if metrics.get("findings"):
            findings = ", ".join(
                f"{finding} {values['auroc']:.3f} (n={values['n_abnormal']})"
                for finding, values in metrics["findings"].items()
            )
            print(f"{name}, AUROC per finding against all normal test films: {findings}")
        for seed, paired in zip(args.seeds, metrics.get("seed_paired_vs_image_only", [])):
            low, high = paired["interval"]
            print(
                f"{name} minus {IMAGE_ONLY}, test AUROC, paired bootstrap, seed {seed}: "
                f"{paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
            )
        for warning in metrics.get("warnings", []):
            print(f"WARNING {name}: {warning}")
    print(f"\nfull results (every score, subgroups, findings, timings): {output}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
