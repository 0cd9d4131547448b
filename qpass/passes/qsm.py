"""QSM (MergeQuant): static per-channel activation steps Δ migrated into the producers, so the only activation
op left at inference is round+clamp in the producer's epilogue. Consumers take W̃ = W·diag(Δ), quantized per
(row, group) over input channels reordered by Δ (dimensional reconstruction: sort, split outlier columns, pad to
a tile), with per-layer clip search and optional GPTQ. See docs/qsm.md for the readings chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..gptq import GPTQError
from ..numerics import fake_quant_per_token
from ..migration import (apply, find_migrations, output_placement, reorder_channels, reorder_observer, rescale_observer,
                         scale_columns)
from ..plan import ActQuant, MigratedInput
from ..schema import Checked, RecipeError, opt
from .clipping import best_weight_clip, gather_cols, int_act, per_token_error, rel_mse
from .context import PassContext
from .rounding import round_weight


@dataclass
class QSMOptions(Checked):
    schema_name = "qsm"  # errors name `qsm.<option>`

    quantize: bool = True  # False: migrate the steps only (nothing rounded) — the exactness check
    granularity: Literal["channel", "tensor"] = "channel"  # channel: a step per input channel | tensor: one per tensor
    # reorder input channels so weight groups hold similar columns: step | column | none
    sort: Literal["step", "column", "none"] = "step"
    # split W̃ columns whose absmax exceeds split × the median column absmax (0: off)
    split: float = opt(0.0, range="[0, inf)", desc="≥ 0 (0: off)")
    max_copies: int = opt(4, range="[1, inf)")
    tile: int = opt(64, range="[1, inf)")  # pad the reconstructed input dim to a multiple of this (when splitting)
    clip_search: bool = True
    act_clip_grid: list[float] = opt(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                                     item_range="(0, 1]", min_len=1)
    weight_clip_grid: list[float] = opt(default_factory=lambda: [1.0, 0.95, 0.9, 0.85, 0.8, 0.75],
                                        item_range="(0, 1]", min_len=1)
    samples: int = opt(256, range="[1, inf)")  # calibration tokens kept per site for the search and the error report
    joint_clip: bool = False  # activation clip scored with each consumer's best weight clip (else with clip 1.0)
    # inference: the first N positions of a prefill stay in full precision (sink tokens)
    keep_first: int = opt(0, range="[0, inf)", desc="≥ 0 (0: off)")
    # inference: tokens with max |x/Δ| > this × the largest code stay in full precision
    outlier_guard: float = opt(0.0, range="[0, inf)", desc="≥ 0 (0: off)")
    untie: bool = False  # GQA (o_proj): a step per query head; the ratio to the tied step is an explicit x/r node
    # a tensor whose static steps (chosen clip, RTN weights) give a larger output error on the calibration tokens
    # than dynamic per-token quantization keeps dynamic per-token activations, unmigrated
    dynamic_fallback: bool = False

    def check_recipe(self, recipe, path: str) -> None:
        """What qsm needs from the rest of the recipe (called by the recipe validator)."""
        a = recipe.activations
        if self.quantize and (a is None or a.granularity != "per_channel"):
            raise RecipeError(f"{path}: qsm needs activations: {{granularity: per_channel}} (or quantize: false)")


def statistics(opts: QSMOptions) -> dict:
    """The calibration statistics qsm reads: `samples` token rows per site (clip search, output error)."""
    return {"samples": opts.samples if (opts.clip_search or opts.quantize) else 0}


def _gather(step, cols, opts: QSMOptions):
    """(gather index [C'], per-gathered-column divisor [C']) for a group: sort, split, pad."""
    c, dev = step.numel(), step.device  # where the statistics live (the CPU, or the block-by-block device)
    key = {"step": step, "column": cols, "none": None}[opts.sort]
    order = torch.argsort(key, stable=True) if key is not None else torch.arange(c, device=dev)
    copies = torch.ones(c, dtype=torch.long, device=dev)
    if opts.split > 0:
        thr = opts.split * cols.median().clamp_min(1e-30)
        copies = torch.ceil(cols / thr).clamp(1, opts.max_copies).long()
    if key is None and opts.split <= 0:
        return None, None
    idx = torch.repeat_interleave(order, copies[order])
    div = copies[idx].float()
    if opts.split > 0 and opts.tile > 1:
        pad = -idx.numel() % opts.tile
        idx = torch.cat([idx, torch.full((pad,), c, dtype=torch.long, device=dev)])
        div = torch.cat([div, torch.ones(pad, device=dev)])
    return idx, div


def _steps(obs, m, bits, clip, granularity, symmetric=True, tie=True):
    """(step Δ [C], zero [C] or None). Asymmetric: codes [0, 2^b-1] cover [min, max]·clip, centred per channel
    (the tie may widen a channel's step beyond its own range)."""
    if symmetric:
        a = obs.absmax.clamp_min(1e-8)
        base = a.amax().expand_as(a) if granularity == "tensor" else a
        st = (base * clip / (2 ** (bits - 1) - 1)).clamp_min(1e-8)
        return (m.tie(st) if tie else st), None
    lo, hi = obs.range("minmax", False)
    lo, hi = lo.clamp_max(0) * clip, hi.clamp_min(0) * clip
    if granularity == "tensor":
        lo, hi = lo.amin().expand_as(lo), hi.amax().expand_as(hi)
    n = 2**bits - 1
    st = ((hi - lo) / n).clamp_min(1e-8)
    st = m.tie(st) if tie else st
    return st, torch.round(n / 2 - (lo + hi) / (2 * st)).clamp(0, n)


def _keep_dynamic(ctx: PassContext, sites, bits: int, why: str) -> None:
    """The consumers of one input tensor take dynamic per-token activations (the tensor is not migrated)."""
    for s in sites:
        sp = ctx.site_plan(s)
        sp.activation = ActQuant(bits, "per_token", True)
        sp.notes.append(f"dynamic per-token A{bits}: {why}")


@torch.no_grad()
def qsm(ctx: PassContext, opts: QSMOptions) -> None:
    """Static per-channel activations with steps migrated into producers; reconstruction, clipping, GPTQ."""
    a_spec, w_spec = ctx.activations, ctx.weights
    bits = a_spec.bits if a_spec is not None else 8
    sym = a_spec.symmetric if a_spec is not None else True
    by_name = ctx.analysis.by_name()
    migrations = find_migrations(ctx.analysis, ctx.sites)
    plans = []  # (site, gather, div, zero, step)
    fallback = []  # migrations left dynamic per-token (dynamic_fallback)
    rotated = []  # migrations left dynamic per-token: their input goes through an online Hadamard
    reordered = []  # migrations whose sorted channel order lives in the producer's rows (no run-time gather)
    # Phase 1: choose each tensor's steps (activation clip searched with RTN weights) and migrate them.
    for m in tqdm(migrations, desc="qsm: steps", unit="tensor", disable=not ctx.progress):
        sites = [by_name[n] for n in m.sites]
        if any(ctx.reads_online_rotation(s.name) for s in sites):
            # the Hadamard spreads one token's outlier over every channel: a static step would have to cover it
            # for all tokens (SmolLM2 W4A4 P&P 58.70 all static vs 36.30, docs/rotation.md)
            _keep_dynamic(ctx, sites, bits, "its input goes through an online Hadamard (rotate)")
            rotated.append(m)
            continue
        obs = ctx.observers[sites[0].name]
        ws = [ctx.weight(s).float() for s in sites]
        cols = lambda st: torch.stack([(w * st).abs().amax(0) for w in ws]).amax(0)  # noqa: E731
        clip, err = 1.0, None
        x = obs.token_samples()
        # only where producer rows are shared (GQA's P·V): elsewhere the tie changes nothing and x/r would be x/1
        untie = opts.untie and m.exact and m.kind == "rows" and m.rows.unique().numel() < m.rows.numel()
        if opts.quantize and opts.clip_search and x is not None and w_spec is not None:
            ys = [x @ w.T for w in ws]
            for c in opts.act_clip_grid:
                st, z = _steps(obs, m, bits, c, opts.granularity, sym, not untie)
                g, d = _gather(st, cols(st), opts)
                xq = gather_cols(int_act(x / st, bits, z), g)
                if opts.joint_clip:
                    e = sum(best_weight_clip(xq, y, gather_cols(w * st, g, d), w_spec, opts.weight_clip_grid)[1]
                            for y, w in zip(ys, ws))
                else:
                    e = sum(rel_mse(y, xq @ round_weight(gather_cols(w * st, g, d), w_spec, 1.0, None).dequantize().T)
                            for y, w in zip(ys, ws))
                if err is None or e < err:
                    clip, err = c, e
        if opts.dynamic_fallback and err is not None:
            dynamic = sum(rel_mse(y, fake_quant_per_token(x, bits) @ round_weight(w, w_spec, 1.0, None).dequantize().T)
                          for y, w in zip(ys, ws))
            if dynamic < err:
                _keep_dynamic(ctx, sites, bits, f"static steps' output error {err / len(sites):.2e} > dynamic "
                                                f"{dynamic / len(sites):.2e} on calibration tokens (dynamic_fallback)")
                fallback.append(m)
                continue
        step, zero = _steps(obs, m, bits, clip, opts.granularity, sym, not untie)
        g, d = _gather(step, cols(step), opts)
        ratio = None
        if m.exact:
            tied = m.tie(step)
            apply(ctx.model, ctx.analysis, m, tied)
            where = m.reason
            if untie:  # the producer rows take the group's max; each query head's ratio r ≤ 1 stays explicit
                ratio = step / tied
                for s in sites:
                    scale_columns(ctx.model, s, ratio)
                where += " + per-query-head x/r (attention epilogue)"
        else:
            for s in sites:
                scale_columns(ctx.model, s, step)
            where = f"explicit quantize node (no exact migration: {m.reason})"
            ctx.log.append(f"qsm: {', '.join(m.sites)} keep an explicit x/Δ node — {m.reason}")
        rescale_observer(obs, step)
        if g is not None and m.reorder and g.numel() == m.channels and opts.split <= 0:
            # a pure reordering a gated MLP's gate/up rows can hold: no gather left for the run time
            reorder_channels(ctx.model, ctx.analysis, m, g)
            reorder_observer(obs, g)
            step, zero, ratio = (None if t is None else t[g] for t in (step, zero, ratio))
            reordered.append(m)
            g = d = None
        for s in sites:
            sp = ctx.site_plan(s)
            # keep_first / outlier_guard: the Q/DQ rewrite then emits the guarded activation op
            sp.migrated = MigratedInput(f"round+clamp fused into {where}", clip, output_placement(s, ctx.analysis),
                                        opts.keep_first, opts.outlier_guard)
            if ratio is not None:
                sp.input_step = ratio.clone()
            if not m.exact:
                sp.input_step = step.clone()
                sp.notes.append(f"explicit quantize node: {m.reason}")
            plans.append((s, g, d, zero, step))
    exact = sum(m.exact for m in migrations if not any(m is f for f in fallback + rotated))
    ctx.log.append(f"qsm: {exact}/{len(migrations)} input tensors migrated exactly into their producers")
    if reordered:
        ctx.log.append(f"qsm: {len(reordered)}/{len(migrations)} input tensors take their sorted channel order from "
                       f"their producers' rows (e.g. {' + '.join(p.name for p in reordered[0].reorder)}): no "
                       f"run-time gather")
    if rotated:
        ctx.log.append(f"qsm: {len(rotated)}/{len(migrations)} input tensors keep dynamic per-token A{bits}: they go "
                       f"through an online Hadamard (rotate)")
    if opts.dynamic_fallback:
        ctx.log.append(f"qsm: dynamic_fallback: {len(fallback)}/{len(migrations)} input tensors keep dynamic per-token "
                       f"A{bits} (lower output error than static steps on calibration tokens)")
    if not opts.quantize:
        return
    # Phase 2: weights from the final migrated model (producer row scalings included).
    worse = []  # (site, static error, dynamic per-token error) where the static steps lose
    compared = 0
    for s, g, d, zero, step in tqdm(plans, desc="qsm: weights", unit="layer", disable=not ctx.progress):
        sp, obs = ctx.site_plan(s), ctx.observers[s.name]
        sp.activation = ActQuant(bits, "per_channel", zero is None, torch.ones(s.in_features, device=step.device), zero)
        sp.gather = g
        if w_spec is None:
            continue
        w = ctx.weight(s).float()
        w_g = gather_cols(w, g, d)
        x = obs.token_samples()
        y = x @ w.T if x is not None else None
        xq = gather_cols(int_act(x, bits, zero), g) if x is not None else None
        wclip = 1.0
        if opts.clip_search and x is not None:
            wclip, _ = best_weight_clip(xq, y, w_g, w_spec, opts.weight_clip_grid)
        h = None
        if w_spec.rounding == "gptq":
            hm = obs.mean_hessian()
            h = gather_cols(gather_cols(hm, g).T, g) if g is not None else hm
        try:
            sp.weight = round_weight(w_g, w_spec, wclip, h, sp.notes)
        except GPTQError as e:  # steps already migrated (the site cannot go back to FP): round to nearest
            sp.notes.append(f"GPTQ failed ({e}); weight rounded to nearest instead")
            sp.weight = round_weight(w_g, w_spec, wclip, None)
        deq = sp.weight.dequantize()
        sp.weight_error = float((deq - w_g).norm() / w_g.norm().clamp_min(1e-30))
        if x is not None:
            sp.output_error = rel_mse(y, xq @ deq.T)
            dynamic = per_token_error(x, step, y, deq, bits, g)
            compared += 1
            if dynamic < sp.output_error:
                worse.append((s.name, sp.output_error, dynamic))
                sp.notes.append(f"static steps: rel. output MSE {sp.output_error:.2e} on calibration tokens; "
                                f"dynamic per-token A{bits} would give {dynamic:.2e}")
        sp.migrated.weight_clip, sp.migrated.reconstructed_in = wclip, int(w_g.shape[1])
        if g is not None and w_g.shape[1] != s.in_features:
            sp.notes.append(f"input dim {s.in_features} -> {w_g.shape[1]} (split + pad)")
    if compared:
        worse.sort(key=lambda t: t[1] / max(t[2], 1e-30), reverse=True)
        top = "; ".join(f"{n} {e:.2e} vs {dy:.2e}" for n, e, dy in worse[:3])
        ctx.log.append(f"qsm: static steps vs dynamic per-token A{bits} (same weights, calibration tokens): static has "
                       f"the larger output error at {len(worse)}/{compared} sites" + (f" (worst: {top})" if top else ""))
