"""SDPA → `qpass::attention`: the dense attention rule, last in the table (no plan needed).

Every `scaled_dot_product_attention` node that no method rule (SALE) took becomes the dense op, which is SDPA
itself except on CUDA, where one-token decode runs a split-K Triton kernel over the whole (static) cache and a
prefill whose mask is the bool causal mask runs flash attention (kernels/attention/dense.py). Under
torch.compile HF materializes masks, so SDPA alone would take its slower masked kernels at both.

K/V come un-repeated when HF repeated them for SDPA (`pattern.match_sdpa` reads through `repeat_kv`): the op
reads grouped K/V by index.
"""
from __future__ import annotations

import torch

from .pattern import Emit, Rule, SdpaMatch, SdpaPattern

PATTERN = SdpaPattern(method=None, causal=False)


def replace(m: SdpaMatch, e: Emit):
    import qpass.kernels.attention.ops  # noqa: F401  (registers qpass::attention)

    return e.call(torch.ops.qpass.attention.default, m.q, m.k, m.v, m.mask, m.is_causal, m.scale, m.enable_gqa)


RULES = [Rule("attention", PATTERN, replace, "qpass::attention")]
