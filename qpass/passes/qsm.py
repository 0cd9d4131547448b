"""QSM (MergeQuant): static per-channel activation steps Δ migrated into the producers, so the only activation
op left at inference is round+clamp in the producer's epilogue. Consumers take W̃ = W·diag(Δ), quantized per
(row, group) over input channels reordered by Δ (dimensional reconstruction: sort, split outlier columns, pad to
a tile), with per-layer clip search and optional GPTQ. See docs/qsm.md for the readings chosen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .. import calibrate
from ..migration import apply, find_migrations, output_placement, rescale_observer, scale_columns
from ..plan import ActQuant
from ..recipe import RecipeError
from .clipping import best_weight_clip, gather_cols, int_act, quantize, rel_mse
from .context import PassContext
from .registry import register


@dataclass
class QSMOptions:
    quantize: bool = True  # False: migrate the steps only (nothing rounded) — the exactness check
    granularity: str = "channel"  # channel: a step per input channel | tensor: one step per tensor
    sort: str = "step"  # reorder input channels so weight groups hold similar columns: step | column | none
    split: float = 0.0  # split W̃ columns whose absmax exceeds split × the median column absmax (0: off)
    max_copies: int = 4
    tile: int = 64  # pad the reconstructed input dim to a multiple of this (when splitting)
    clip_search: bool = True
    act_clip_grid: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    weight_clip_grid: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.9, 0.85, 0.8, 0.75])
    samples: int = 256  # calibration tokens kept per site for the search and the error report


def _stats(opts: QSMOptions) -> dict:
    return {"samples": opts.samples if (opts.clip_search or opts.quantize) else 0}


calibrate.PASS_STATISTICS["qsm"] = _stats


def _gather(step, cols, opts: QSMOptions):
    """(gather index [C'], per-gathered-column divisor [C']) for a group: sort, split, pad."""
    c = step.numel()
    key = {"step": step, "column": cols, "none": None}[opts.sort]
    order = torch.argsort(key, stable=True) if key is not None else torch.arange(c)
    copies = torch.ones(c, dtype=torch.long)
    if opts.split > 0:
        thr = opts.split * cols.median().clamp_min(1e-30)
        copies = torch.ceil(cols / thr).clamp(1, opts.max_copies).long()
    if key is None and opts.split <= 0:
        return None, None
    idx = torch.repeat_interleave(order, copies[order])
    div = copies[idx].float()
    if opts.split > 0 and opts.tile > 1:
        pad = -idx.numel() % opts.tile
        idx = torch.cat([idx, torch.full((pad,), c, dtype=torch.long)])
        div = torch.cat([div, torch.ones(pad)])
    return idx, div


def _steps(a, m, bits, clip, granularity):
    qmax = 2 ** (bits - 1) - 1
    base = a.amax().expand_as(a) if granularity == "tensor" else a
    return m.tie((base * clip / qmax).clamp_min(1e-8))


@register("qsm", QSMOptions, needs_calibration=True)
@torch.no_grad()
def qsm(ctx: PassContext, opts: QSMOptions) -> None:
    """Static per-channel activations with steps migrated into producers; reconstruction, clipping, GPTQ."""
    if opts.sort not in ("step", "column", "none") or opts.granularity not in ("channel", "tensor"):
        raise RecipeError("passes.qsm: sort must be step | column | none; granularity channel | tensor")
    a_spec, w_spec = ctx.recipe.activations, ctx.recipe.weights
    if opts.quantize and (a_spec is None or a_spec.granularity != "per_channel" or not a_spec.symmetric):
        raise RecipeError("passes.qsm: needs activations: {granularity: per_channel, symmetric: true}")
    bits = a_spec.bits if a_spec is not None else 8
    by_name = ctx.analysis.by_name()
    migrations = find_migrations(ctx.analysis, ctx.sites)
    plans = []  # (site, gather, div)
    # Phase 1: choose each tensor's steps (activation clip searched with RTN weights) and migrate them.
    for m in tqdm(migrations, desc="qsm: steps", unit="tensor", disable=not ctx.progress):
        sites = [by_name[n] for n in m.sites]
        obs = ctx.observers[sites[0].name]
        a = obs.absmax.clamp_min(1e-8)
        ws = [ctx.weight(s).float() for s in sites]
        cols = lambda st: torch.stack([(w * st).abs().amax(0) for w in ws]).amax(0)  # noqa: E731
        clip, err = 1.0, None
        x = obs.token_samples()
        if opts.quantize and opts.clip_search and x is not None and w_spec is not None:
            ys = [x @ w.T for w in ws]
            for c in opts.act_clip_grid:
                st = _steps(a, m, bits, c, opts.granularity)
                g, d = _gather(st, cols(st), opts)
                xq = gather_cols(int_act(x / st, bits), g)
                e = sum(rel_mse(y, xq @ quantize(gather_cols(w * st, g, d), w_spec, 1.0, None).dequantize().T)
                        for y, w in zip(ys, ws))
                if err is None or e < err:
                    clip, err = c, e
        step = _steps(a, m, bits, clip, opts.granularity)
        g, d = _gather(step, cols(step), opts)
        if m.exact:
            apply(ctx.model, ctx.analysis, m, step)
            where = m.reason
        else:
            for s in sites:
                scale_columns(ctx.model, s, step)
            where = f"explicit quantize node (no exact migration: {m.reason})"
            ctx.log.append(f"qsm: {', '.join(m.sites)} keep an explicit x/Δ node — {m.reason}")
        rescale_observer(obs, step)
        for s in sites:
            sp = ctx.site_plan(s)
            sp.lowering = {"input": f"round+clamp fused into {where}", "act_clip": clip,
                           "delta": output_placement(s, ctx.analysis)}
            if not m.exact:
                sp.input_step = step.clone()
                sp.notes.append(f"explicit quantize node: {m.reason}")
            plans.append((s, g, d))
    exact = sum(m.exact for m in migrations)
    ctx.log.append(f"qsm: {exact}/{len(migrations)} input tensors migrated exactly into their producers")
    if not opts.quantize:
        return
    # Phase 2: weights from the final migrated model (producer row scalings included).
    for s, g, d in tqdm(plans, desc="qsm: weights", unit="layer", disable=not ctx.progress):
        sp, obs = ctx.site_plan(s), ctx.observers[s.name]
        sp.activation = ActQuant(bits, "per_channel", True, torch.ones(s.in_features))
        sp.gather = g
        if w_spec is None:
            continue
        w = ctx.weight(s).float()
        w_g = gather_cols(w, g, d)
        x = obs.token_samples()
        y = x @ w.T if x is not None else None
        xq = gather_cols(int_act(x, bits), g) if x is not None else None
        wclip = 1.0
        if opts.clip_search and x is not None:
            wclip, _ = best_weight_clip(xq, y, w_g, w_spec, opts.weight_clip_grid)
        h = None
        if w_spec.rounding == "gptq":
            hm = obs.mean_hessian()
            h = gather_cols(gather_cols(hm, g).T, g) if g is not None else hm
        sp.weight = quantize(w_g, w_spec, wclip, h)
        deq = sp.weight.dequantize()
        sp.weight_error = float((deq - w_g).norm() / w_g.norm().clamp_min(1e-30))
        if x is not None:
            sp.output_error = rel_mse(y, xq @ deq.T)
        sp.lowering.update({"weight_clip": wclip, "reconstructed_in": int(w_g.shape[1])})
        if g is not None and w_g.shape[1] != s.in_features:
            sp.notes.append(f"input dim {s.in_features} -> {w_g.shape[1]} (split + pad)")
