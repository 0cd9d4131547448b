"""SDPA → SALE: the attention rule of the table (lowering/rules.py).

Each causal `scaled_dot_product_attention` node (is_causal=True, or the materialized bool mask HF passes under
Dynamo / torch.export) of a module the `sale` pass calibrated becomes `qpass::sale_attention` with that module's
per-head τ (a graph constant) and the pass's options.  The op runs SDPA itself for short prefills (S ≤
min_seq_len) and when the mask it is given turns out not to be causal at run time (checked per call inside the
op, so the graph has no data-dependent branch and exports) — unless the mask is computed from literals alone and
is the causal mask (lowering/attention.py `constant_causal_mask`), which is checked when the graph is lowered.

The τ come from the plan: the `sale` pass fills `Plan.attention` ({calibrated module path: AttentionPlan}); a local
layer's plan carries the model's sliding window (`model_window`), passed to the op, which then checks per call that
the mask it gets is that window's (else dense attention with the mask).
"""
from __future__ import annotations

import torch

from .attention import constant_causal_mask
from .pattern import Emit, Rule, SdpaMatch, SdpaPattern


PATTERN = SdpaPattern(method="sale")


def replace(m: SdpaMatch, e: Emit):
    import qpass.kernels.sale.ops  # noqa: F401  (registers qpass::sale_*)

    o = m.plan.options
    tau = e.const("sale_tau", lambda: torch.tensor(m.plan.taus, dtype=torch.float32))
    # group=False: per-head selection, the rule τ was calibrated with (whether K/V arrive grouped or repeated).
    window = getattr(o, "model_window", None)  # a local layer's sliding window; full-causal calls omit the argument
    # a mask of literals that is the (window's) causal mask is checked here: the op then reads none at run time
    mask = None if constant_causal_mask(m, window) else m.mask
    return e.call(torch.ops.qpass.sale_attention.default, m.q, m.k, m.v, tau, m.scale, o.block_m, o.block_n,
                  o.sink, o.window, o.min_seq_len, False, int(getattr(o, "pool", 1)), mask,
                  *(() if window is None else (window,)))


RULES = [Rule("sale", PATTERN, replace, "qpass::sale_attention")]
