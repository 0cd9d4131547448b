"""PTQTP trit-plane pass: every selected linear's weight becomes W ≈ diag(α1)·T1 + diag(α2)·T2 (data-free)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..tritplane import decompose
from .context import PassContext
from .registry import register


@dataclass
class TritPlaneOptions:
    group_size: int | None = None  # None: 128 where it divides the input dim, else 64
    max_iter: int = 50
    tol: float = 1e-4
    method: str = "sorted"  # "sorted" (qpass: multi-start, exact per-block search) | "paper" (the literal algorithm)


def _group_size(opts: TritPlaneOptions, in_features: int) -> int:
    if opts.group_size is not None:
        return opts.group_size
    return 128 if in_features % 128 == 0 else 64


@register("trit_planes", TritPlaneOptions)
@torch.no_grad()
def trit_planes(ctx: PassContext, opts: TritPlaneOptions) -> None:
    """Decompose each selected weight into two ternary planes with per-(row, group) scales."""
    if opts.method not in ("sorted", "paper"):
        from ..recipe import RecipeError

        raise RecipeError(f"passes.trit_planes.method: {opts.method!r} is not allowed; allowed: 'sorted' | 'paper'")
    start, iters = time.perf_counter(), []
    for site in tqdm(list(ctx.sites.values()), desc="trit planes", unit="layer", disable=not ctx.progress):
        w = ctx.weight(site).float()
        tp = decompose(w, _group_size(opts, site.in_features), max_iter=opts.max_iter, tol=opts.tol, method=opts.method)
        sp = ctx.site_plan(site)
        sp.weight = tp
        sp.weight_error = _rel_error(w, tp)
        st = tp.stats
        iters.append(st["iters_mean"])
        sp.notes.append(
            f"{st['iters_mean']:.1f} iterations per block (max {st['iters_max']}), "
            f"{st['converged_frac']:.0%} converged, zeros {st['zero_frac_t1']:.0%}/{st['zero_frac_t2']:.0%}"
        )
    mean_it = sum(iters) / max(len(iters), 1)
    ctx.log.append(
        f"trit_planes: {len(ctx.sites)} layers decomposed in {time.perf_counter() - start:.1f} s, "
        f"{mean_it:.1f} iterations per block on average"
    )


def _rel_error(w: torch.Tensor, tp) -> float:
    from ..tritplane import reconstruct

    return float((reconstruct(tp) - w).norm() / w.norm().clamp_min(1e-30))
