"""Where the kernels run: the Triton-interpreter check (the one place kernels/ reads the environment) and the
SM count of a CUDA device (persistent and split grids are sized by it)."""
from __future__ import annotations

import os

import torch

_NUM_SMS = {}


def interpreting() -> bool:
    """TRITON_INTERPRET=1: Triton runs kernels in its CPU interpreter (bf16 arithmetic is wrong there: upcast)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def persistent_programs(device, blocks: int, per_sm: int) -> int:
    """Programs of a persistent grid over `blocks` work items: `per_sm` per multiprocessor on CUDA, at most one
    per item (one per item elsewhere: the interpreter)."""
    return min(blocks, cuda_sms(device) * per_sm) if device.type == "cuda" else blocks


def cuda_sms(device) -> int:
    """Multiprocessors of a CUDA device (cached)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _NUM_SMS:
        _NUM_SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _NUM_SMS[idx]
