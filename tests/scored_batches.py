"""Scored batches as a stock ``SupervisedEvaluator`` running ``Diff3MAnomalyInferer`` leaves them, for handler tests."""

from __future__ import annotations

from typing import Any

from monai.utils import CommonKeys

#: What ``Diff3MAnomalyInferer`` returns, the evaluator's ``pred``.
INFERER_KEYS = ("twin", "anomaly_map", "smoothed_map", "scores", "ehr_attention")


def evaluator_step(engine: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's output for ``batch``: a flat dict holding the batch (``image``, ``source``, ``ehr``, ...) and a
    precomputed inferer result under ``INFERER_KEYS``; the batch itself stays in ``engine.state.batch``."""
    pred = {key: batch[key] for key in INFERER_KEYS}
    return {CommonKeys.IMAGE: batch["image"], CommonKeys.LABEL: None, CommonKeys.PRED: pred}
