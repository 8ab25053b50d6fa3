"""Seeding and the cuDNN switches of a run: exact reproducibility only where it is asked for.

MONAI's ``set_determinism`` seeds every generator and also forces ``cudnn.deterministic=True`` and
``cudnn.benchmark=False``. On a GPU that costs the convolution autotuner, and convolutions are 99 % of a Diff3M
step's FLOPs, so the bundles seed with it and then set the cuDNN flags from two config keys: ``deterministic``
(bit-exact reruns and resumes, the autotuner off) and ``cudnn_benchmark`` (the autotuner, the default whenever
``deterministic`` is off). On a CPU neither flag changes anything, so CPU runs stay exact either way.
"""

from __future__ import annotations

import os

import torch
from monai.utils import set_determinism

__all__ = ["seed_run"]


def seed_run(seed: int, deterministic: bool = False, cudnn_benchmark: bool | None = None) -> None:
    """Seed torch, numpy and ``random`` from ``seed``, then set cuDNN's algorithm choice.

    Args:
        seed: the run's seed (``set_determinism``).
        deterministic: deterministic cuDNN algorithms and no autotuner, so that a rerun or a resumed run repeats
            the same numbers on a GPU; ``torch.use_deterministic_algorithms`` is turned on with ``warn_only`` so
            that an op without a deterministic kernel warns rather than stops a long run, and cuBLAS gets the
            fixed workspace it needs for deterministic matrix products (unless the environment already sets one).
        cudnn_benchmark: time the cuDNN algorithms of each new input shape and keep the fastest; ``None`` means
            "on unless ``deterministic``". It cannot be combined with ``deterministic``.
    """
    if deterministic and cudnn_benchmark:
        raise ValueError("cudnn_benchmark picks algorithms by timing them, which deterministic=True rules out")
    set_determinism(seed=seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = (not deterministic) if cudnn_benchmark is None else cudnn_benchmark
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
