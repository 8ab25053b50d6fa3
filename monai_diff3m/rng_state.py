"""Random number generator state that a resumed training run needs to continue the same loss curve.

A Diff3M training step draws its timesteps and noise from the global torch RNG, the shuffling ``DataLoader`` seeds
its sampler from it at the start of every epoch, and MONAI's ``set_determinism`` also seeds numpy and ``random``.
Saving the weights and the epoch alone would therefore resume with the RNG as it was at epoch 0: the resumed run
would repeat the first epochs' noise and batch orders instead of continuing the interrupted run. The state is kept
as tensors and plain Python values so that ``torch.load(..., weights_only=True)`` can read it back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """The current state of the torch (CPU and, when available, CUDA), numpy and Python ``random`` generators."""
    _, key, position, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set every generator to a state returned by :func:`capture_rng_state`.

    The CUDA state is restored only when it was saved and this machine has the same number of GPUs; a run resumed
    on another machine continues with the CPU generators restored, which is all a CPU run uses.
    """
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    key = numpy_state["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
