"""Mixed precision for the network's forward pass, on whatever device it runs.

MONAI's engines (``SupervisedTrainer``/``SupervisedEvaluator`` with ``amp=True``) autocast for ``"cuda"`` only and
add a float16 ``GradScaler``: on a CPU the switch silently does nothing (bf16 is 1.4x faster on CPUs with
AVX512-BF16), and on a GPU bf16 needs no loss scaling. Diff3M's inferers therefore autocast the network call
themselves, for the device of the input, and hand float32 back to the loss and the scores.
"""

from __future__ import annotations

import torch


def network_autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` to ``dtype`` on ``device_type``; disabled when ``dtype`` is None (full float32)."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
