"""PTQTP trit-plane pass: every selected linear's weight becomes W ≈ diag(α1)·T1 + diag(α2)·T2 — data-free by
default; with `calibration: true`, fitted to the activation-weighted error from calibration data
(qpass/trit_gptq.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..schema import Checked, RecipeError, opt
from ..gptq import GPTQError
from ..trit_gptq import fit_with_hessian, hessian_error
from ..tritplane import decompose
from .context import PassContext


@dataclass
class TritPlaneOptions(Checked):
    schema_name = "trit_planes"  # errors name `trit_planes.<option>`

    # 64 on every layer: 128 where it divides in_features (the old default) cost SmolLM2 59.3 -> 53.4 PPL
    # for 0.25 bit per weight more on those layers (docs/tritplane.md)
    group_size: int = opt(64, range="[1, inf)")
    max_iter: int = opt(50, range="[1, inf)")
    tol: float = opt(1e-4, range="[0, inf)")  # relative scale change that counts as converged
    method: Literal["sorted", "paper"] = "sorted"  # "sorted" (qpass: multi-start, exact per-block search) | "paper" (the literal algorithm)
    # with calibration data: fit the activation-weighted error (Hessian of each input), GPTQ-style trits
    calibration: bool = False
    rounds: int = opt(2, range="[1, inf)")  # calibration: (trits, scales) alternations
    act_order: bool = True  # calibration: round columns in order of decreasing mean x²
    damp: float = opt(0.01, range="[0, inf)")  # calibration: Hessian damping, fraction of its mean diagonal

    def check_fields(self, path: str) -> None:
        if self.calibration and self.method != "sorted":
            raise RecipeError(f"{path}.method: calibration: true starts from method 'sorted', got {self.method!r}")


def needs_calibration(opts: TritPlaneOptions) -> bool:
    return opts.calibration


def statistics(opts: TritPlaneOptions) -> dict:
    """The calibration statistics the pass reads: each input's Hessian XᵀX when it fits with data."""
    return {"hessian": True} if opts.calibration else {}


@torch.no_grad()
def trit_planes(ctx: PassContext, opts: TritPlaneOptions) -> None:
    """Decompose each selected weight into two ternary planes with per-(row, group) scales."""
    start, iters = time.perf_counter(), []
    for site in tqdm(list(ctx.sites.values()), desc="trit planes", unit="layer", disable=not ctx.progress):
        w = ctx.weight(site).float()
        G = opts.group_size
        if opts.calibration:
            hessian = ctx.observers[site.name].mean_hessian().float()
            try:
                tp = fit_with_hessian(w, hessian, G, rounds=opts.rounds, act_order=opts.act_order, damp=opts.damp,
                                      max_iter=opts.max_iter, tol=opts.tol)
            except GPTQError as e:
                ctx.keep_full_precision(site.name, f"trit planes with calibration data failed: {e}")
                continue
        else:
            tp = decompose(w, G, max_iter=opts.max_iter, tol=opts.tol, method=opts.method)
        sp = ctx.site_plan(site)
        sp.weight = tp
        sp.weight_error = _rel_error(w, tp)
        st = tp.stats
        if opts.calibration:
            sp.output_error = st["output_error"]
            sp.notes.append(f"activation-weighted error {st['start_output_error']:.4f} (weighted decomposition) -> "
                            f"{st['output_error']:.4f} after {opts.rounds} GPTQ-style rounds, "
                            f"zeros {st['zero_frac_t1']:.0%}/{st['zero_frac_t2']:.0%}")
            continue
        iters.append(st["iters_mean"])
        sp.notes.append(
            f"{st['iters_mean']:.1f} iterations per block (max {st['iters_max']}), "
            f"{st['converged_frac']:.0%} converged, zeros {st['zero_frac_t1']:.0%}/{st['zero_frac_t2']:.0%}"
        )
    how = ("fitted to calibration data (Hessian-weighted, GPTQ-style trits)" if opts.calibration else
           f"decomposed data-free, {sum(iters) / max(len(iters), 1):.1f} iterations per block on average")
    ctx.log.append(f"trit_planes: {len(ctx.sites)} layers {how} in {time.perf_counter() - start:.1f} s")


def _rel_error(w: torch.Tensor, tp) -> float:
    from ..tritplane import reconstruct

    return float((reconstruct(tp) - w).norm() / w.norm().clamp_min(1e-30))
