"""qpass::attention: dense SDPA as a custom op, with faster paths (attention/dense.py) for the two cases compiled
HF gets wrong: one-token decode over a static cache (the Triton decode kernel) and causal prefills given as a
materialized bool mask (flash attention). Arguments are checked (kernels/checks.py `check_attention`) in the
implementation and the fake.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..define import kernel_op
from ..checks import check_attention, planned
from .dense import plan


@kernel_op("qpass::attention")
def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
              scale: Optional[float], enable_gqa: bool) -> Tensor:
    """SDPA(q, k, v, attn_mask, 0.0, is_causal, scale, enable_gqa): [B, H, S, Dv] in [B, S, H, Dv] memory (as
    flash attention writes it: the model's transpose(1, 2) after attention is then contiguous, no copy;
    attention/dense.py `token_major`)."""
    return planned(check_attention, plan, q, k, v, attn_mask, is_causal, scale, enable_gqa)(
        q, k, v, attn_mask, is_causal, scale, enable_gqa)


@attention.register_fake
def _(q, k, v, attn_mask, is_causal, scale, enable_gqa):
    check_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa)
    *lead, heads, rows, _ = q.shape
    return q.new_empty(*lead, rows, heads, v.shape[-1]).transpose(-3, -2)
