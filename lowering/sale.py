"""Lowering SDPA to SALE: each causal `scaled_dot_product_attention` node (is_causal=True, or the materialized
bool causal mask HF passes under Dynamo) of a module the `sale` pass calibrated becomes
`qpass::sale_attention` with that module's per-head τ.  Short prefills (S ≤ min_seq_len) stay dense inside
the op; a mask that turns out not to be causal at run time falls back to SDPA.

Not a linear rule (lowering/rules.py holds those): `lower_sdpa(cap, state)` is a graph transform applied after
the linear lowering — `sale_transform(state, inner)` composes it with qpass's quantize transform.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from qpass.capture import SDPA_TARGETS, CapturedGraph, module_path


def _arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def sale_or_sdpa(q, k, v, mask, tau, scale, block_m, block_n, sink, window, min_seq_len, enable_gqa):
    """SALE when `mask` is None (is_causal) or a bool causal mask [.., S, S]; SDPA otherwise."""
    import qpass.kernels.sale_ops  # noqa: F401

    S = q.shape[2]
    if k.shape[1] != q.shape[1] and not enable_gqa and mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if mask is not None:
        causal = torch.ones(S, S, dtype=torch.bool, device=mask.device).tril()
        if mask.dtype != torch.bool or mask.shape[-2:] != (S, S) or not bool((mask == causal).all()):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)
    return torch.ops.qpass.sale_attention(q, k, v, tau.to(q.device), scale, block_m, block_n, sink, window,
                                          min_seq_len)


torch.fx.wrap("sale_or_sdpa")


def lower_sdpa(cap: CapturedGraph, state, outcomes: dict | None = None) -> int:
    """Replace the causal SDPA nodes of calibrated modules; returns how many."""
    gm, graph = cap.gm, cap.graph
    o = state.options
    n = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in SDPA_TARGETS:
            continue
        name = module_path(node)
        taus = state.taus.get(name)
        mask = _arg(node, 3, "attn_mask")
        causal = bool(_arg(node, 5, "is_causal", False))
        if taus is None or (mask is None and not causal) or float(_arg(node, 4, "dropout_p", 0.0) or 0.0) != 0.0:
            if outcomes is not None:
                outcomes[name] = "sdpa: not calibrated" if taus is None else "sdpa: not causal"
            continue
        buf = f"qpass_sale_tau_{n}_{len(gm._buffers)}"
        gm.register_buffer(buf, torch.tensor(taus, dtype=torch.float32))
        q, k, v = node.args[:3]
        with graph.inserting_before(node):
            tau = graph.get_attr(buf)
            new = graph.call_function(sale_or_sdpa, (q, k, v, mask, tau, _arg(node, 6, "scale"), o.block_m,
                                                     o.block_n, o.sink, o.window, o.min_seq_len,
                                                     bool(_arg(node, 7, "enable_gqa", False))))
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        if outcomes is not None:
            outcomes[name] = "qpass::sale_attention"
        n += 1
    if n:
        graph.lint()
        gm.recompile()
    return n


def sale_transform(state, inner=None, outcomes: dict | None = None):
    """The graph transform for a SALE model: `inner` (e.g. the quantize transform) then `lower_sdpa`."""
    outcomes = {} if outcomes is None else outcomes

    def transform(cap: CapturedGraph) -> None:
        if inner is not None:
            inner(cap)
        lower_sdpa(cap, state, outcomes)

    transform.outcomes = getattr(inner, "outcomes", outcomes)
    transform.sale_outcomes = outcomes
    return transform


def apply_sale(qmodel, state=None):
    """Re-compile `qmodel` (from qpass.compile, or any HF model) so its causal SDPA runs SALE; `state` defaults
    to `qmodel.qpass_sale` (left by the `sale` pass)."""
    from qpass.capture import compile_forward

    state = state if state is not None else qmodel.qpass_sale
    qs = getattr(qmodel, "qpass_state", None)
    tr = sale_transform(state, getattr(qs, "transform", None))
    qmodel.forward, _ = compile_forward(qmodel, tr)
    qmodel.qpass_sale = state
    return tr.sale_outcomes
