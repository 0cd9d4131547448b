"""Programmatic dependent launch (PDL, sm_90+) for the decode kernels.

A kernel launched with PDL may start while the kernel before it in the stream is finishing; it executes
`gdc_wait` before it first reads anything that kernel wrote (and writes nothing before that). A decode step is a
chain of few-µs kernels, so each one's launch, and for the GEMVs the first HBM round trip of weights (which no
kernel writes), then overlap the previous kernel's tail. Captured CUDA graphs keep the overlap.

QPASS_PDL=0 turns it off (benchmarks compare both).
"""
from __future__ import annotations

import os

import torch

_CAPABLE: dict[int, bool] = {}


def pdl(device: torch.device) -> dict:
    """Launch kwargs for a kernel with a `USE_GDC: tl.constexpr` parameter: PDL on CUDA devices of compute
    capability >= 9 (never under TRITON_INTERPRET, where `device` is the CPU), otherwise a plain launch."""
    if device.type != "cuda" or os.environ.get("QPASS_PDL", "1") == "0":
        return {"USE_GDC": False}
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _CAPABLE:
        _CAPABLE[idx] = torch.cuda.get_device_capability(idx)[0] >= 9
    return {"USE_GDC": True, "launch_pdl": True} if _CAPABLE[idx] else {"USE_GDC": False}
