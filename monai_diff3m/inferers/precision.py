"""Mixed precision for the network's forward pass, on whatever device it runs.

MONAI's engines (``SupervisedTrainer``/``SupervisedEvaluator`` with ``amp=True``) autocast for ``"cuda"`` only and
add a float16 ``GradScaler``: on a CPU the switch silently does nothing (bf16 trains 1.9x faster per step on
CPUs with AVX512-BF16), and on a GPU bf16 needs no loss scaling. Diff3M's inferers therefore autocast the network call
themselves, for the device of the input, and hand float32 back to the loss and the scores.

bf16 is the training default where the hardware computes it natively (:func:`bf16_is_fast`): on 3 seeds of NIH
dev64 it trained 1.7-2.0x faster on a 2-core CPU with validation AUROC and losses within seed noise
(docs/results.md, "bf16 autocast on CPU").
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def network_autocast(device_type: str, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device_type``; nothing when ``dtype`` is None (full float32) or the device
    has no autocast (the ``meta`` device, on which the benchmarks count FLOPs without computing)."""
    if dtype is None or not torch.amp.is_autocast_available(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: any CUDA device (tensor cores), or a CPU with AVX512-BF16 or AMX
    instructions. On other CPUs bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's probes (private, so guarded)
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)
