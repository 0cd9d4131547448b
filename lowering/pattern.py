"""What a lowering rule is: a declarative pattern over the fake-quant linear shape, and a replacement.

The Q/DQ rewrite (`lowering/qdq.py`, `insert_fake_quant`) writes every planned site as

    x ─[div(step)]─▶ act_op(x, …)? ─[pad, index_select]─▶ linear(·, weight_op(codes, scales, …), bias)

and tags the linear with `meta["qpass_site"]`. `match_linear` reads that shape back into a `LinearMatch`;
a rule's `Pattern` says which activation op and weight op it takes and which bits / groups / symmetry its
kernel supports, and `Pattern.refuse(match)` names the first thing that does not fit (None: it fits).

Attention rules match `scaled_dot_product_attention` nodes instead (`match_sdpa` → `SdpaMatch`, `SdpaPattern`):
the module's entry in the plan's `attention` table (an `AttentionPlan`, e.g. SALE's per-head τ) says which
method, and the pattern refuses what its kernel cannot take (no plan, not causal, dropout, GQA without
`enable_gqa`).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx

from qpass.plan import AttentionPlan, SitePlan

from . import qdq_ops  # noqa: F401  (registers the fake-quant ops the rules match)

DEQ_INT = torch.ops.qpass.dequantize_weight.default
DEQ_TRIT = torch.ops.qpass.dequantize_trit_planes.default
ACT_TOKEN = torch.ops.qpass.fake_quant_per_token.default
ACT_CHANNEL = torch.ops.qpass.fake_quant_per_channel.default
ACT_GUARDED = torch.ops.qpass.fake_quant_per_channel_guarded.default  # QSM keep_first / outlier_guard
ACT_OPS = (ACT_TOKEN, ACT_CHANNEL, ACT_GUARDED)
GATHER_OPS = (torch.nn.functional.pad, torch.index_select)  # channel sort / split / pad (QSM), re-applied after quantizing

_OP_NAMES = {DEQ_INT: "dequantize_weight", DEQ_TRIT: "dequantize_trit_planes", ACT_TOKEN: "fake_quant_per_token",
             ACT_CHANNEL: "fake_quant_per_channel", ACT_GUARDED: "fake_quant_per_channel_guarded",
             None: "no activation quantization"}


@dataclass
class LinearMatch:
    """One fake-quant linear, read back from the graph."""

    node: fx.Node  # the linear
    site: str
    plan: SitePlan
    x: fx.Node  # the activation op's input (or the linear's input when there is none)
    act_op: object  # ACT_TOKEN | ACT_CHANNEL | ACT_GUARDED | None
    weight_op: object  # DEQ_INT | DEQ_TRIT
    bias: fx.Node | None
    gather: list[fx.Node] = field(default_factory=list)  # nodes between the activation op and the linear
    in_features: int = 0  # K the kernel sees (after gather)
    act: fx.Node | None = None  # the activation op's node (its arguments: the guard's keep_first / outlier)

    @property
    def out_dtype(self) -> torch.dtype:
        v = self.node.meta.get("example_value", self.node.meta.get("val"))
        return v.dtype if isinstance(v, torch.Tensor) else self.plan.dtype

    def describe(self) -> str:
        w = self.plan.weight
        bits = f"w{w.bits}" if self.weight_op is DEQ_INT else "trit-plane"
        act = "a16" if self.act_op is None else f"a{self.plan.activation.bits} {self.plan.activation.granularity}"
        return f"{bits} {act}"


def _linear_parts(node: fx.Node):
    args = list(node.args) + [None] * (3 - len(node.args))
    return args[0], args[1], node.kwargs.get("bias", args[2])


def match_linear(node: fx.Node, plan: SitePlan) -> LinearMatch | None:
    """The fake-quant shape at `node`, or None when the weight is not a qpass dequantize op."""
    x, w, bias = _linear_parts(node)
    if not isinstance(w, fx.Node) or w.target not in (DEQ_INT, DEQ_TRIT):
        return None
    gather = []
    while isinstance(x, fx.Node) and x.op == "call_function" and x.target in GATHER_OPS:
        gather.insert(0, x)
        x = x.args[0]
    act_op = None
    act = None
    if isinstance(x, fx.Node) and x.op == "call_function" and x.target in ACT_OPS:
        act, act_op, x = x, x.target, x.args[0]
    w_codes = plan.weight.t1 if w.target is DEQ_TRIT else plan.weight.qweight
    return LinearMatch(node, plan.site, plan, x, act_op, w.target, bias, gather, int(w_codes.shape[-1]), act)


def kernel_group_ok(K: int, group_size: int) -> bool:
    """The W4A16 / ternary Triton kernels' group-size support (other sizes would silently run the reference)."""
    from qpass.kernels.int4.w4a16 import supported_group  # imports triton: only when a rule is tried

    return supported_group(K, group_size)


def int_group_ok(K: int, group_size: int) -> bool:
    """The integer GEMMs' (int8 / W4A8) group-size support."""
    from qpass.kernels.int8.gemm import int_group_ok as ok  # imports triton: only when a rule is tried

    return ok(K, group_size)


# What each group check accepts, in words for refusals and warnings.
KERNEL_GROUPS = "a power of two ≥ 16, a multiple of 256, or the whole input row"
GROUPS_IN_WORDS = {kernel_group_ok: KERNEL_GROUPS, int_group_ok: "a multiple of 32, or the whole input row"}


class GroupRefusal(str):
    """A refusal because the kernel does not take the weight's group size: the reason, with `group` and `K`
    (lower_graph collects these sites for one warning per compile)."""

    def __new__(cls, group: int, K: int, takes: str = KERNEL_GROUPS):
        self = super().__new__(cls, f"group size {group} at K={K} is not supported by the kernel "
                                    f"(it takes {takes})")
        self.group, self.K = group, K
        return self


def integer_codes(t: torch.Tensor, bits: int) -> bool:
    """Every value of `t` an integer code of `bits` bits, [0, 2**bits - 1] (an asymmetric weight's zero points)."""
    return bool(torch.all((t == torch.round(t)) & (t >= 0) & (t <= 2 ** bits - 1)))


def uniform_step(plan: SitePlan) -> float | None:
    """The single step of a static per-channel activation scale, or None if it varies by channel (zero points,
    if any, are separate)."""
    a = plan.activation
    if a is None or a.scale is None:
        return None
    s = a.scale.flatten()
    return float(s[0]) if bool(torch.all(s == s[0])) else None


@dataclass(frozen=True)
class Pattern:
    """Declarative: which fake-quant ops a rule takes, and what its kernel supports."""

    weight_op: object  # DEQ_INT | DEQ_TRIT
    act_op: object = None  # ACT_TOKEN | ACT_CHANNEL | ACT_GUARDED | None (weight-only)
    weight_bits: tuple[int, ...] = ()  # int weights: allowed code widths (codes must fit the container)
    act_bits: tuple[int, ...] = ()
    symmetric_weight: bool = False  # the kernel has no zero points
    integer_weight_zero: bool = False  # zero points, if any, must be integer codes (the int GEMMs subtract in int32)
    group_ok: Callable[[int, int], bool] | None = None  # (K, group_size) -> the kernel supports it
    static_uniform_step: bool = False  # static activations: one step for all channels (the kernel takes a scalar)
    act_zero_points: bool = False  # static asymmetric activations: the quantizer adds per-channel zero points

    def fits_ops(self, m: LinearMatch) -> bool:
        return m.weight_op is self.weight_op and m.act_op is self.act_op

    def refuse(self, m: LinearMatch) -> str | None:
        """None when `m` fits, else why not."""
        if not self.fits_ops(m):
            return f"takes {_OP_NAMES[self.act_op]} + {_OP_NAMES[self.weight_op]}"
        w, a = m.plan.weight, m.plan.activation
        if m.gather and self.act_op is None:
            return "channel gather without activation quantization"
        if self.weight_op is DEQ_INT:
            if self.weight_bits and w.bits not in self.weight_bits:
                return f"weight bits {w.bits} not in {self.weight_bits}"
            if self.symmetric_weight and w.zero is not None:
                return "asymmetric weights (the kernel has no zero points)"
            if self.integer_weight_zero and w.zero is not None and not integer_codes(w.zero, w.bits):
                return (f"weight zero points are not integers in [0, {2 ** w.bits - 1}] (the integer GEMM subtracts "
                        "them exactly in int32)")
        group = (w.group_size or 0) if self.weight_op is DEQ_INT else w.group_size
        if self.group_ok is not None and not self.group_ok(m.in_features, group):
            return GroupRefusal(group, m.in_features, GROUPS_IN_WORDS.get(self.group_ok, KERNEL_GROUPS))
        if a is not None:
            if self.act_bits and a.bits not in self.act_bits:
                return f"activation bits {a.bits} not in {self.act_bits}"
            if not a.symmetric and not self.act_zero_points:
                return "asymmetric activations (the kernel quantizes symmetrically)"
            if self.static_uniform_step and uniform_step(m.plan) is None:
                return "static per-channel activation steps differ by channel (the kernel takes one step)"
        return None


class Emit:
    """What a replacement writes with: constants (packed once per site, held as GraphModule buffers) and calls."""

    def __init__(self, gm: fx.GraphModule, m: LinearMatch | SdpaMatch, cache: dict):
        self.gm, self.m, self.cache = gm, m, cache

    def const(self, key: str, make: Callable[[], torch.Tensor]) -> fx.Node:
        ck = (self.m.site, key)
        if ck not in self.cache:
            self.cache[ck] = make().contiguous()
        name = "qpass_lowered_" + "".join(c if c.isalnum() else "_" for c in f"{self.m.site}_{key}")
        if not hasattr(self.gm, name):
            self.gm.register_buffer(name, self.cache[ck], persistent=False)
        return self.gm.graph.get_attr(name)

    def call(self, op, *args) -> fx.Node:
        return self.gm.graph.call_function(op, tuple(args))

    def item(self, node: fx.Node, i: int) -> fx.Node:
        return self.gm.graph.call_function(operator.getitem, (node, i))

    def regather(self, x: fx.Node) -> fx.Node:
        """Re-apply the site's channel gather (pad, index_select) to the quantized input."""
        for g in self.m.gather:
            x = self.gm.graph.call_function(g.target, (x, *g.args[1:]), dict(g.kwargs))
        return x


# ------------------------------------------------------------------ attention (SDPA) rules
@dataclass
class SdpaMatch:
    """One `scaled_dot_product_attention` node, read back from the graph."""

    node: fx.Node
    site: str  # the attention module's path (the report's key)
    plan: AttentionPlan | None
    q: fx.Node
    k: fx.Node
    v: fx.Node
    mask: fx.Node | None
    is_causal: bool
    dropout: object
    scale: object  # float | None
    enable_gqa: bool

    def describe(self) -> str:
        return f"sdpa ({'is_causal' if self.is_causal else 'mask' if self.mask is not None else 'no mask'})"


def _sdpa_arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def match_sdpa(node: fx.Node, attention: dict, site: str) -> SdpaMatch:
    """The node's arguments, K / V read through HF's repeat_kv (then `enable_gqa`); `site`: the attention
    module's model-level path (`CapturedGraph.module_path`)."""
    q, k, v = node.args[:3]
    k, v, gqa = _grouped_kv(q, k, v, bool(_sdpa_arg(node, 7, "enable_gqa", False)))
    return SdpaMatch(node, site, attention.get(site), q, k, v, _sdpa_arg(node, 3, "attn_mask"),
                     bool(_sdpa_arg(node, 5, "is_causal", False)), _sdpa_arg(node, 4, "dropout_p", 0.0),
                     _sdpa_arg(node, 6, "scale"), gqa)


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


def _grouped_kv(q: fx.Node, k: fx.Node, v: fx.Node, enable_gqa: bool):
    """(k, v, enable_gqa): both un-repeated when both are repeat_kv of the same group size, else as given.
    With a mask HF repeats K/V to the query heads (`repeat_kv`), which inductor materializes: a copy of the whole
    cache, H/Hkv times over, per layer and token. The attention ops read grouped K/V by index."""
    from qpass.capture import node_value

    qv = node_value(q)
    if qv is None or qv.dim() != 4 or enable_gqa:
        return k, v, enable_gqa
    k1, v1 = unrepeat_kv(k, qv.shape[1]), unrepeat_kv(v, qv.shape[1])
    if k1 is None or v1 is None or node_value(k1).shape[1] != node_value(v1).shape[1]:
        return k, v, enable_gqa
    return k1, v1, True


@dataclass(frozen=True)
class SdpaPattern:
    """Declarative: which attention method's plan a rule takes (None: any node, no plan — the dense rule) and
    what its kernel supports (`causal`: only causal attention, as SALE)."""

    method: str | None
    causal: bool = True

    def refuse(self, m: SdpaMatch) -> str | None:
        from qpass.capture import node_value

        if self.method is not None:
            if m.plan is None:
                return "no attention plan for this module (not calibrated)"
            if m.plan.method != self.method:
                return f"takes {self.method} plans, not {m.plan.method}"
            if m.plan.refused:
                return m.plan.refused
        if self.causal:
            if m.mask is None and not m.is_causal:
                return "not causal (no mask, is_causal=False)"
            if m.is_causal and m.mask is not None:
                return "both a mask and is_causal"
        if isinstance(m.dropout, fx.Node) or float(m.dropout or 0.0) != 0.0:
            return "dropout"
        q, k = node_value(m.q), node_value(m.k)
        if q is not None and k is not None:
            if q.dim() != 4 or k.dim() != 4:
                return "not [B, H, S, D] inputs"
            if q.shape[1] != k.shape[1] and not m.enable_gqa:
                return "query and key heads differ without enable_gqa"
            if self.method is not None and len(m.plan.taus) != q.shape[1]:
                return f"{len(m.plan.taus)} τ for {q.shape[1]} query heads"
        return None


@dataclass(frozen=True)
class Rule:
    name: str  # shown in the report (`lowering` column)
    pattern: Pattern | SdpaPattern  # a linear pattern, or an attention (SDPA) pattern
    replace: Callable[[LinearMatch, Emit], fx.Node]  # emits the kernel call, returns the node replacing the match
    kernel: str  # the qpass:: op it emits (docs)
