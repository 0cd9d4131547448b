"""SDPA → `qpass::attention`: the dense attention rule, last in the table (no plan needed).

Every `scaled_dot_product_attention` node that no method rule (SALE) took becomes the dense op, which is SDPA
itself except on CUDA, where one-token decode runs a split-K Triton kernel over the whole (static) cache and a
prefill whose mask is the bool causal mask runs flash attention (kernels/attention/dense.py). Under
torch.compile HF materializes masks, so SDPA alone would take its slower masked kernels at both.

K/V come un-repeated when HF repeated them for SDPA (`pattern.match_sdpa` reads through `repeat_kv`): the op
reads grouped K/V by index. A mask that constants alone compute (a compiled prompt without a cache or padding:
HF builds it from `arange`s) is checked here, once: when it is the causal mask over as many keys as queries, the op
gets `is_causal` and no mask, so no run reads the mask (a device sync) and flash attention runs.
"""
from __future__ import annotations

import torch

from qpass.capture import node_value
from qpass.kernels.attention.dense import causal_mask

from .graph_constants import constant_value
from .pattern import Emit, Rule, SdpaMatch, SdpaPattern

PATTERN = SdpaPattern(method=None, causal=False)


def replace(m: SdpaMatch, e: Emit):
    import qpass.kernels.attention.ops  # noqa: F401  (registers qpass::attention)

    mask, is_causal = (None, True) if constant_causal_mask(m) else (m.mask, m.is_causal)
    return e.call(torch.ops.qpass.attention.default, m.q, m.k, m.v, mask, is_causal, m.scale, m.enable_gqa)


def constant_causal_mask(m: SdpaMatch, window: int | None = None) -> bool:
    """The match's mask is computed from literals alone and is the bool causal mask over S queries and S keys
    (S > 1; within `window` keys when given), which the ops' own causal form (no mask) means too. Evaluated once
    per mask node (every layer reads the same one), the answer kept in the node's meta."""
    q, k, mask = node_value(m.q), node_value(m.k), node_value(m.mask)
    if m.is_causal or q is None or k is None or mask is None or mask.dtype != torch.bool or mask.dim() < 2:
        return False
    S = q.shape[-2]
    if not (isinstance(S, int) and S > 1 and k.shape[-2] == S and tuple(mask.shape[-2:]) == (S, S)):
        return False
    known = m.mask.meta.setdefault("qpass_constant_causal", {})
    if window not in known:
        value = constant_value(m.mask)
        known[window] = (isinstance(value, torch.Tensor) and value.dtype == torch.bool
                         and tuple(value.shape) == tuple(mask.shape)
                         and bool((value == causal_mask(S, window, value.device)).all()))
    return known[window]

RULES = [Rule("attention", PATTERN, replace, "qpass::attention")]
