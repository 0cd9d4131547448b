"""SDPA → `qpass::attention`: the dense attention rule, last in the table (no plan needed).

Every `scaled_dot_product_attention` node that no method rule (SALE) took becomes the dense op, which is SDPA
itself except on CUDA, where one-token decode runs a split-K Triton kernel over the whole (static) cache and a
prefill whose mask is the bool causal mask runs flash attention (kernels/attention_ops.py). Under
torch.compile HF materializes masks, so SDPA alone would take its slower masked kernels at both.

With a mask HF also repeats K/V to the query heads (`repeat_kv`: x[:, :, None].expand(…).reshape(…)), which
inductor materializes: a copy of the whole cache, H/Hkv times over, per layer and token. The op reads grouped
K/V by index (`enable_gqa`), so the rule hands it the un-repeated tensors and the copies go dead.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .pattern import Emit, Rule, SdpaMatch, SdpaPattern

PATTERN = SdpaPattern(method=None, causal=False)
_RESHAPES = {"reshape", "view", torch.reshape, torch.ops.aten.reshape.default, torch.ops.aten.view.default,
             torch.ops.aten._unsafe_view.default}
_EXPANDS = {"expand", torch.ops.aten.expand.default}
_UNSQUEEZES = {"unsqueeze", torch.unsqueeze, torch.ops.aten.unsqueeze.default}
_CLONES = {"clone", "contiguous", torch.ops.aten.clone.default}
_FULL = slice(None, None, None)


def _is(node, targets) -> bool:
    return isinstance(node, fx.Node) and node.op in ("call_method", "call_function") and node.target in targets


def _unsqueezed_at_2(node):
    """x for x[:, :, None] (Dynamo: getitem with None at 2) or x.unsqueeze(2); else None."""
    if _is(node, {operator.getitem}) and node.args[1] == (_FULL, _FULL, None, _FULL, _FULL):
        return node.args[0]
    if _is(node, _UNSQUEEZES) and tuple(node.args[1:]) in ((2,), (-3,)) and not node.kwargs:
        return node.args[0]
    return None


def unrepeat_kv(node: fx.Node, q_heads: int) -> fx.Node | None:
    """x for HF's repeat_kv(x, n) = x[:, :, None].expand(B, Hkv, n, L, D).reshape(B, Hkv * n, L, D) with
    Hkv * n == q_heads (checked on the recorded shapes); None for anything else."""
    from qpass.capture import node_value

    if not _is(node, _RESHAPES):
        return None
    expanded = node.args[0]
    if _is(expanded, _CLONES):  # export: expand → clone → view
        expanded = expanded.args[0]
    if not _is(expanded, _EXPANDS):
        return None
    x = _unsqueezed_at_2(expanded.args[0])
    xv, ev, rv = node_value(x), node_value(expanded), node_value(node)
    if xv is None or ev is None or rv is None or xv.dim() != 4 or ev.dim() != 5:
        return None
    b, hkv, length, d = xv.shape
    n = ev.shape[2]
    if tuple(ev.shape) != (b, hkv, n, length, d) or tuple(rv.shape) != (b, hkv * n, length, d) or hkv * n != q_heads:
        return None
    return x


def _grouped_kv(m: SdpaMatch):
    """(k, v, enable_gqa): both un-repeated when both are repeat_kv of the same group size, else as given."""
    from qpass.capture import node_value

    qv = node_value(m.q)
    if qv is None or qv.dim() != 4 or m.enable_gqa:
        return m.k, m.v, m.enable_gqa
    k, v = unrepeat_kv(m.k, qv.shape[1]), unrepeat_kv(m.v, qv.shape[1])
    if k is None or v is None or node_value(k).shape[1] != node_value(v).shape[1]:
        return m.k, m.v, m.enable_gqa
    return k, v, True


def replace(m: SdpaMatch, e: Emit):
    import qpass.kernels.attention_ops  # noqa: F401  (registers qpass::attention)

    k, v, gqa = _grouped_kv(m)
    return e.call(torch.ops.qpass.attention.default, m.q, k, v, m.mask, m.is_causal, m.scale, gqa)


RULES = [Rule("attention", PATTERN, replace, "qpass::attention")]
