"""Expert sites in the one graph transform. Q/DQ: a planned grouped matmul `grouped_mm(x, W [E, in, out], offs)`
reads the dequantized expert weights instead of the parameter (the fake-quant reference, tagged with its site).
Lowering: a tagged one whose codes fit int4 becomes `qpass::moe_w4a16` (one call over all routed experts); every
other grouped matmul on an expert tensor becomes `qpass::moe_linear` in full precision, so a lowered MoE program
calls only qpass and aten ops (transformers' `grouped_mm_fallback` is not on qpass.load's allow-list)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qpass.analysis import analyze
from qpass.capture import CapturedGraph
from qpass.kernels.formats import pack_int4
from qpass.plan import Plan, SitePlan

from .pattern import Emit
from .qdq import _attr

_TAG = "qpass_expert"
W4A16_BITS = (2, 3, 4)  # codes that fit the int4 container, as the w4a16 rule takes them


@dataclass
class ExpertMatch:
    site: str  # Emit.const names packed tensors by it
    plan: SitePlan | None


def insert_expert_fake_quant(cap: CapturedGraph, plan: Plan) -> int:
    """Each planned expert site's grouped matmul reads dequantize(q, s, z) viewed [E, out, in] and transposed to
    the [E, in, out] it multiplies by. Returns how many it rewrote."""
    gm, graph = cap.gm, cap.graph
    experts = getattr(plan, "experts", {})
    rewritten = 0
    for site in analyze(cap).experts:
        sp = experts.get(site.name)
        node = site.node
        node.meta[_TAG] = (site.name, site.num_experts)
        if sp is None or sp.weight is None:
            continue
        w, prefix = sp.weight, f"qpass_{site.name}"
        with graph.inserting_before(node):
            q = _attr(gm, graph, f"{prefix}_qweight", w.qweight)
            scale = _attr(gm, graph, f"{prefix}_weight_scale", w.scale)
            zero = _attr(gm, graph, f"{prefix}_weight_zero", w.zero)
            deq = graph.call_function(torch.ops.qpass.dequantize_weight.default,
                                      (q, scale, zero, w.group_size or 0, sp.dtype))
            deq = graph.call_function(torch.reshape, (deq, (site.num_experts, site.out_features, site.in_features)))
            weight = graph.call_function(torch.transpose, (deq, 1, 2))
        node.update_arg(1, weight)
        rewritten += 1
    return rewritten


def lower_experts(cap: CapturedGraph, plan: Plan, outcomes: dict[str, str], cache: dict) -> int:
    """Replace every grouped matmul on an expert tensor (tagged by `insert_expert_fake_quant`) by a qpass op."""
    gm, graph = cap.gm, cap.graph
    experts = getattr(plan, "experts", {})
    lowered = 0
    for node in list(graph.nodes):
        tag = node.meta.get(_TAG)
        if tag is None or node.op != "call_function":
            continue
        name, E = tag
        x, warg = node.args[0], node.args[1]
        offs = node.args[2] if len(node.args) > 2 else node.kwargs.get("offs")
        sp = experts.get(name)
        with graph.inserting_before(node):
            if sp is not None and sp.weight is not None:
                w = sp.weight
                if w.bits not in W4A16_BITS:
                    outcomes[name] = f"unmatched: no expert kernel takes {w.bits}-bit weights (moe_w4a16 takes 2-4 bits)"
                    continue
                e = Emit(gm, ExpertMatch(name, sp), cache)
                rows = w.qweight.shape[0]  # E * out: each expert's rows, in expert order
                packed = e.const("qweight_int4", lambda: pack_int4(w.qweight).reshape(E, rows // E, -1))
                scales = e.const("scales", lambda: w.scale.float().reshape(E, rows // E, -1))
                zeros = e.const("zeros", lambda: w.zero.float().reshape(E, rows // E, -1)) if w.zero is not None else None
                new = graph.call_function(torch.ops.qpass.moe_w4a16.default,
                                          (x, packed, scales, zeros, offs, w.group_size or 0))
                outcomes[name] = "moe_w4a16"
            else:  # full precision: the op reads [E, out, in], the transpose of what the grouped matmul reads
                weight = graph.call_function(torch.transpose, (warg, 1, 2))
                new = graph.call_function(torch.ops.qpass.moe_linear.default, (x, weight, offs))
        new.meta.update({k: v for k, v in node.meta.items() if k != _TAG})
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        lowered += 1
    return lowered

