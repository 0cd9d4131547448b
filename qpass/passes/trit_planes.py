"""PTQTP trit-plane pass: every selected linear's weight becomes W ≈ diag(α1)·T1 + diag(α2)·T2 (data-free)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..schema import Checked, opt
from ..tritplane import decompose
from .context import PassContext


@dataclass
class TritPlaneOptions(Checked):
    schema_name = "trit_planes"  # errors name `trit_planes.<option>`

    group_size: int | None = opt(None, range="[1, inf)", desc="a positive integer or null (128 or 64 by layer)")
    max_iter: int = opt(50, range="[1, inf)")
    tol: float = opt(1e-4, range="[0, inf)")  # relative scale change that counts as converged
    method: Literal["sorted", "paper"] = "sorted"  # "sorted" (qpass: multi-start, exact per-block search) | "paper" (the literal algorithm)


def _group_size(opts: TritPlaneOptions, in_features: int) -> int:
    if opts.group_size is not None:
        return opts.group_size
    return 128 if in_features % 128 == 0 else 64


@torch.no_grad()
def trit_planes(ctx: PassContext, opts: TritPlaneOptions) -> None:
    """Decompose each selected weight into two ternary planes with per-(row, group) scales."""
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
