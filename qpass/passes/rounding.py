"""Weight rounding, in one place: round to nearest or GPTQ as the recipe says (`round_weight`, also used by
qsm's clip search), and the quantize step every recipe ends with (`plan_quantization`: each selected site's
weight and input quantization into the plan)."""
from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from ..gptq import GPTQError, gptq_quantize, layer_error
from ..numerics import QuantizedWeight, fake_quant_per_token, quantize_weight
from ..plan import ActQuant, nonfinite_reason, static_activation
from .clipping import rel_mse
from .context import PassContext


def round_weight(w: torch.Tensor, spec, clip: float, hessian: torch.Tensor | None,
                 notes: list[str] | None = None) -> QuantizedWeight:
    """`w` [out, in] rounded per the recipe's WeightSpec `spec` with clip ratio `clip`: GPTQ when the spec asks
    for it and a Hessian (of the layer's input, as the GEMM reads it) is given, else round to nearest. GPTQ's
    raised damping (a Hessian not positive definite) is appended to `notes`; GPTQError propagates."""
    if spec.rounding == "gptq" and hessian is not None:
        info: dict = {}
        q = gptq_quantize(w, hessian, spec.bits, spec.group_size, spec.symmetric, clip, spec.gptq_damp,
                          spec.gptq_act_order, spec.gptq_block, spec.gptq_static_groups, info=info,
                          clip_search=spec.clip_search, integer_steps=spec.integer_group_steps)
        if notes is not None and "note" in info:
            notes.append(info["note"])
        return q
    return quantize_weight(w, spec.bits, spec.group_size, spec.symmetric, clip, spec.clip_search,
                           spec.integer_group_steps)


TOKEN_CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)


def search_token_clips(ctx: PassContext, aspec) -> None:
    """Each input's clip (TOKEN_CLIP_GRID × clip_ratio) of its dynamic per-token steps: the one whose outputs on
    calibration tokens, with the quantized weights, are closest to full precision (QuaRot clips at a fixed 0.9;
    the best clip differs per layer). Sites reading one input (q/k/v, gate/up) share its quantizer, so they get
    one clip, chosen on the sum of their relative output errors. Noted on each site."""
    done = set()
    for site in ctx.sites.values():
        group = [s for s in [site.name, *site.siblings] if s in ctx.plan and s not in done
                 and getattr(ctx.plan[s].activation, "granularity", None) == "per_token"]
        if not group:
            continue
        done.update(group)
        x = ctx.observers[group[0]].token_samples().float()
        errors = dict.fromkeys((r * aspec.clip_ratio for r in TOKEN_CLIP_GRID), 0.0)
        for name in group:
            sp = ctx.plan[name]
            w = ctx.weight(ctx.sites[name]).float().to(x.device)
            deq = sp.weight.dequantize().float().to(x.device) if sp.weight is not None else w
            y = x @ w.T
            for clip in errors:
                errors[clip] += rel_mse(y, fake_quant_per_token(x, aspec.bits, aspec.symmetric, clip) @ deq.T)
        best = min(errors, key=errors.get)
        for name in group:
            ctx.plan[name].activation.clip_ratio = best
            ctx.plan[name].notes.append(f"activation clip {best:g}, searched (relative output MSE {errors[best]:.2e}, "
                                        f"at clip {aspec.clip_ratio:g} {errors[aspec.clip_ratio]:.2e})")


def at_bits(spec, bits: int):
    """The recipe's weight spec at a pass's chosen width; 8 bits symmetric (the w8a16 kernel's format)."""
    return dataclasses.replace(spec, bits=bits, symmetric=True if bits == 8 else spec.symmetric)


@torch.no_grad()
def plan_quantization(ctx: PassContext) -> None:
    """Fill the plan: weights per the recipe's `weights` (RTN or GPTQ), input quantization per its `activations`.

    A site whose weight (after the passes) or quantization parameters are not finite, or on which GPTQ cannot
    run, stays in full precision with the reason in the report (ctx.keep_full_precision)."""
    wspec, aspec = ctx.weights, ctx.activations
    gptq = wspec is not None and wspec.rounding == "gptq"  # the slow case: a bar with its ETA
    for site in tqdm(list(ctx.sites.values()), desc="gptq", unit="layer", disable=not (ctx.progress and gptq),
                     leave=False):
        sp = ctx.site_plan(site)
        if wspec is not None and sp.weight is None:
            w = ctx.weight(site).float()
            reason = nonfinite_reason(w, "weight after the passes")
            if reason is not None:
                ctx.keep_full_precision(site.name, reason)
                continue
            hessian = ctx.observers[site.name].mean_hessian() if wspec.rounding == "gptq" else None
            spec = wspec if sp.bits is None else at_bits(wspec, sp.bits)
            try:
                sp.weight = round_weight(w, spec, spec.clip_ratio, hessian, sp.notes)
            except GPTQError as e:
                ctx.keep_full_precision(site.name, f"GPTQ failed: {e}")
                continue
            if not bool(torch.isfinite(sp.weight.scale).all()):
                ctx.keep_full_precision(site.name, "weight scales are not finite (values too large for float32)")
                continue
            sp.weight_error = float((sp.weight.dequantize() - w).norm() / w.norm().clamp_min(1e-30))
            obs = ctx.observers.get(site.name)
            if obs is not None and obs.hessian is not None and aspec is None:  # weight-only: exact from H
                sp.output_error = layer_error(w, sp.weight.dequantize(), obs.mean_hessian())
        if aspec is not None and sp.activation is None:
            if aspec.granularity == "per_token":
                sp.activation = ActQuant(aspec.bits, "per_token", aspec.symmetric, clip_ratio=aspec.clip_ratio)
            else:
                obs = ctx.observers[site.name]
                problem = obs.problem()  # screened before the passes; a pass may not have re-collected
                if problem is not None:
                    ctx.keep_full_precision(site.name, problem)
                    continue
                sp.activation = static_activation(aspec, obs)
    if aspec is not None and aspec.clip_search != "none":
        search_token_clips(ctx, aspec)
