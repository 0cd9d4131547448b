"""The quantize step every recipe ends with: plan each selected site's weight (round to nearest) and input
quantization, then — as a graph transform — insert the quantize-dequantize nodes."""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from .. import ops  # noqa: F401  (registers torch.ops.qpass.*)
from ..analysis import analyze
from ..capture import CapturedGraph
from ..gptq import GPTQError, gptq_quantize, layer_error
from ..numerics import quantize_weight
from ..plan import ActQuant, SitePlan, nonfinite_reason, static_activation
from ..tritplane import TritPlanes
from .context import PassContext


@torch.no_grad()
def plan_quantization(ctx: PassContext) -> None:
    """Fill the plan: RTN weights per `recipe.weights`, input quantization per `recipe.activations`.

    A site whose weight (after the passes) or quantization parameters are not finite, or on which GPTQ cannot
    run, stays in full precision with the reason in the report (ctx.keep_full_precision)."""
    wspec, aspec = ctx.recipe.weights, ctx.recipe.activations
    for site in list(ctx.sites.values()):
        sp = ctx.site_plan(site)
        if wspec is not None and sp.weight is None:
            w = ctx.weight(site).float()
            reason = nonfinite_reason(w, "weight after the passes")
            if reason is not None:
                ctx.keep_full_precision(site.name, reason)
                continue
            if wspec.rounding == "gptq":
                info: dict = {}
                try:
                    sp.weight = gptq_quantize(
                        w, ctx.observers[site.name].mean_hessian(), wspec.bits, wspec.group_size, wspec.symmetric,
                        wspec.clip_ratio, wspec.gptq_damp, wspec.gptq_act_order, wspec.gptq_block,
                        wspec.gptq_static_groups, info=info,
                    )
                except GPTQError as e:
                    ctx.keep_full_precision(site.name, f"GPTQ failed: {e}")
                    continue
                if "note" in info:
                    sp.notes.append(info["note"])
            else:
                sp.weight = quantize_weight(w, wspec.bits, wspec.group_size, wspec.symmetric, wspec.clip_ratio)
            if not bool(torch.isfinite(sp.weight.scale).all()):
                ctx.keep_full_precision(site.name, "weight scales are not finite (values too large for float32)")
                continue
            sp.weight_error = float((sp.weight.dequantize() - w).norm() / w.norm().clamp_min(1e-30))
            obs = ctx.observers.get(site.name)
            if obs is not None and obs.hessian is not None and aspec is None:  # weight-only: exact from H
                sp.output_error = layer_error(w, sp.weight.dequantize(), obs.mean_hessian())
        if aspec is not None and sp.activation is None:
            if aspec.granularity == "per_token":
                sp.activation = ActQuant(aspec.bits, "per_token", aspec.symmetric)
            else:
                obs = ctx.observers[site.name]
                problem = obs.problem()  # screened before the passes; a pass may not have re-collected
                if problem is not None:
                    ctx.keep_full_precision(site.name, problem)
                    continue
                sp.activation = static_activation(aspec, obs)


def _attr(gm: fx.GraphModule, graph: fx.Graph, name: str, value: torch.Tensor | None):
    if value is None:
        return None
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name)
    gm.register_buffer(name, value, persistent=False)
    return graph.get_attr(name)


def insert_fake_quant(cap: CapturedGraph, plan: dict[str, SitePlan]) -> int:
    """Graph transform: rewrite every planned linear site as
    `linear(fake_quant_act(x), dequantize_weight(q, scale, zero), bias)`. Returns how many sites it rewrote."""
    gm, graph = cap.gm, cap.graph
    rewritten = 0
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
                step = _attr(gm, graph, f"{prefix}_input_step", sp.input_step)
                x = graph.call_function(torch.div, (x, step))
            if a is not None and a.granularity == "per_token":
                x = graph.call_function(torch.ops.qpass.fake_quant_per_token.default, (x, a.bits, a.symmetric))
            elif a is not None:
                scale = _attr(gm, graph, f"{prefix}_input_scale", a.scale)
                zero = _attr(gm, graph, f"{prefix}_input_zero", a.zero)
                keep, guard = int(sp.lowering.get("keep_first", 0)), float(sp.lowering.get("outlier_guard", 0.0))
                if keep or guard:  # sink / massive-activation tokens stay in full precision (qsm options)
                    x = graph.call_function(torch.ops.qpass.fake_quant_per_channel_guarded.default,
                                            (x, scale, zero, a.bits, keep, guard))
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
