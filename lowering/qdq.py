"""The Q/DQ rewrite, the first half of the one graph transform (lowering/lower.py `quantize_transform`): every
planned linear site becomes `linear(fake_quant_act(x), dequantize_weight(q, scale, zero), bias)` in qpass's
fake-quant ops (lowering/qdq_ops.py), tagged with `meta["qpass_site"]`. The result is the accuracy reference;
the lowering rules then replace what a kernel takes."""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from qpass.analysis import analyze
from qpass.capture import CapturedGraph
from qpass.plan import SitePlan
from qpass.rotation import insert_online_rotations
from qpass.tritplane import TritPlanes

from . import qdq_ops  # noqa: F401  (registers the torch.ops.qpass fake-quant ops this rewrite emits)


def _per_token_args(x, a) -> tuple:
    """qpass::fake_quant_per_token's arguments; the default clip ratio is left out (graphs as before it existed)."""
    return (x, a.bits, a.symmetric) + ((a.clip_ratio,) if a.clip_ratio != 1.0 else ())


def _attr(gm: fx.GraphModule, graph: fx.Graph, name: str, value: torch.Tensor | None):
    if value is None:
        return None
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name)
    gm.register_buffer(name, value, persistent=False)
    return graph.get_attr(name)


def insert_fake_quant(cap: CapturedGraph, plan: dict[str, SitePlan]) -> int:
    """Graph transform: rewrite every planned linear site as
    `linear(fake_quant_act(x), dequantize_weight(q, scale, zero), bias)`, x first rotated by `qpass::hadamard`
    where the plan holds an online rotation for the site (`plan.rotations`). Returns how many sites it rewrote."""
    gm, graph = cap.gm, cap.graph
    rewritten = 0
    insert_online_rotations(cap, getattr(plan, "rotations", {}))  # before the quantizers: they read the rotated x
    for site in analyze(cap).linears:
        sp = plan.get(site.name)
        if sp is None or (sp.weight is None and sp.activation is None and sp.input_step is None):
            continue
        node, prefix = site.node, f"qpass_{site.name}"
        bias = node.args[0] if site.op == "addmm" else (node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"))
        with graph.inserting_before(node):
            x = site.input
            a = sp.activation
            if sp.input_step is not None:  # explicit quantize node: no producer absorbed the step
                # in the model's dtype: an fp32 step would promote a bf16 activation to fp32
                step = _attr(gm, graph, f"{prefix}_input_step", sp.input_step.to(sp.dtype))
                x = graph.call_function(torch.div, (x, step))
                # x / step keeps x's shape: its recorded value, for rules that read the input's shape
                x.meta.update({k: v for k, v in site.input.meta.items() if k in ("example_value", "val")})
            if a is not None and a.granularity == "per_token":
                x = graph.call_function(torch.ops.qpass.fake_quant_per_token.default, _per_token_args(x, a))
            elif a is not None:
                scale = _attr(gm, graph, f"{prefix}_input_scale", a.scale)
                zero = _attr(gm, graph, f"{prefix}_input_zero", a.zero)
                mi = sp.migrated
                if mi is not None and mi.guarded:  # sink / massive-activation tokens stay in full precision (qsm)
                    x = graph.call_function(torch.ops.qpass.fake_quant_per_channel_guarded.default,
                                            (x, scale, zero, a.bits, mi.keep_first, mi.outlier_guard))
                else:
                    x = graph.call_function(torch.ops.qpass.fake_quant_per_channel.default, (x, scale, zero, a.bits))
            if sp.gather is not None:  # the GEMM reads channels sorted / split / zero-padded
                if int(sp.gather.max()) >= site.in_features:
                    x = graph.call_function(torch.nn.functional.pad, (x, (0, 1)))
                idx = _attr(gm, graph, f"{prefix}_gather", sp.gather)
                x = graph.call_function(torch.index_select, (x, -1, idx))
            if isinstance(sp.weight, TritPlanes):
                tp = sp.weight
                args = [_attr(gm, graph, f"{prefix}_{k}", getattr(tp, k)) for k in ("t1", "t2", "alpha1", "alpha2")]
                weight = graph.call_function(
                    torch.ops.qpass.dequantize_trit_planes.default, (*args, tp.group_size, sp.dtype)
                )
            elif sp.weight is not None:
                w = sp.weight
                q = _attr(gm, graph, f"{prefix}_qweight", w.qweight)
                scale = _attr(gm, graph, f"{prefix}_weight_scale", w.scale)
                zero = _attr(gm, graph, f"{prefix}_weight_zero", w.zero)
                weight = graph.call_function(
                    torch.ops.qpass.dequantize_weight.default, (q, scale, zero, w.group_size or 0, sp.dtype)
                )
            else:
                weight = node.args[2] if site.op == "addmm" else node.args[1]
                if site.transposed:
                    weight = graph.call_method("t", (weight,))
            new = graph.call_function(torch._C._nn.linear, (x, weight, bias))
        new.meta.update(node.meta)
        new.meta["qpass_site"] = site.name  # lowering rules find the site by this tag
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        rewritten += 1
    return rewritten


def fake_quant_linear(x: torch.Tensor, sp: SitePlan, weight: torch.Tensor, bias: torch.Tensor | None,
                      transposed: bool = False) -> torch.Tensor:
    """The rewrite above run eagerly on one call: `linear(fake_quant_act(x), dequantize_weight(...), bias)` with
    the same ops, for the block-by-block path (qpass/sequential.py), which feeds each block's quantized outputs to
    the next without capturing a graph per block. `weight`: the live parameter (used when the plan leaves it in
    full precision), [in, out] when `transposed`. tests/test_sequential.py checks it against the graph rewrite."""
    dev = x.device
    t = lambda v: None if v is None else v.to(dev)  # noqa: E731  (the plan lives where its passes computed)
    a = sp.activation
    if sp.input_step is not None:
        x = x / sp.input_step.to(dev, sp.dtype)
    if a is not None and a.granularity == "per_token":
        x = torch.ops.qpass.fake_quant_per_token(*_per_token_args(x, a))
    elif a is not None:
        mi = sp.migrated
        if mi is not None and mi.guarded:
            x = torch.ops.qpass.fake_quant_per_channel_guarded(x, t(a.scale), t(a.zero), a.bits, mi.keep_first,
                                                                mi.outlier_guard)
        else:
            x = torch.ops.qpass.fake_quant_per_channel(x, t(a.scale), t(a.zero), a.bits)
    if sp.gather is not None:
        if int(sp.gather.max()) >= x.shape[-1]:
            x = torch.nn.functional.pad(x, (0, 1))
        x = torch.index_select(x, -1, t(sp.gather))
    if isinstance(sp.weight, TritPlanes):
        tp = sp.weight
        w = torch.ops.qpass.dequantize_trit_planes(t(tp.t1), t(tp.t2), t(tp.alpha1), t(tp.alpha2), tp.group_size,
                                                   sp.dtype)
    elif sp.weight is not None:
        q = sp.weight
        w = torch.ops.qpass.dequantize_weight(t(q.qweight), t(q.scale), t(q.zero), q.group_size or 0, sp.dtype)
    else:
        w = weight.t() if transposed else weight
    return torch._C._nn.linear(x, w, bias)
