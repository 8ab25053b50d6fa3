"""ROC and precision-recall figures for comparing anomaly scores.

The figure is drawn on an explicit Agg canvas instead of through ``pyplot``, so it works on headless training
machines and never changes the global matplotlib backend of the process that imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from monai_diff3m.io import atomic_path
from monai_diff3m.metrics.anomaly_metrics import validate_labels_scores

__all__ = ["save_roc_pr_curves"]


def save_roc_pr_curves(labels, scores_by_name: Mapping[str, object], path: str | os.PathLike) -> Path:
    """Write one PNG with the ROC curve (left) and the precision-recall curve (right) of every score.

    Args:
        labels: 1 = abnormal, 0 = normal, shared by all scores.
        scores_by_name: score name -> scores (higher = more anomalous), each as long as ``labels``.
        path: PNG file to write atomically; its folder must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no scores given, or bad labels/scores (the message names the score).
    """
    if not scores_by_name:
        raise ValueError(f"cannot plot {path}: scores_by_name is empty; give at least one named score array")
    checked = {name: validate_labels_scores(labels, scores, str(name)) for name, scores in scores_by_name.items()}
    figure = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(figure)
    roc_axes, pr_axes = figure.subplots(1, 2)
    for name, (name_labels, scores) in checked.items():
        false_positive_rate, true_positive_rate, _ = roc_curve(name_labels, scores)
        roc_axes.plot(
            false_positive_rate, true_positive_rate, label=f"{name} (AUROC {roc_auc_score(name_labels, scores):.3f})"
        )
        precision, recall, _ = precision_recall_curve(name_labels, scores)
        pr_axes.step(
            recall, precision, where="post", label=f"{name} (AP {average_precision_score(name_labels, scores):.3f})"
        )
    first_labels = next(iter(checked.values()))[0]
    roc_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    pr_axes.axhline(first_labels.mean(), linestyle="--", color="grey", linewidth=0.8, label="prevalence")
    for axes, title, x_label, y_label, legend_location in (
        (roc_axes, "ROC", "False positive rate (1 - specificity)", "True positive rate (sensitivity)", "lower right"),
        (pr_axes, "Precision-recall", "Recall (sensitivity)", "Precision", "lower left"),
    ):
        axes.set(title=title, xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(loc=legend_location, fontsize="small")
    figure.tight_layout()
    target = Path(path)
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return target
