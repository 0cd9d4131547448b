"""Trit planes fitted with calibration data: the activation-weighted error tr(ΔW H ΔWᵀ), H = E[xᵀx] of the
layer's input, instead of the plain weight error of the data-free decomposition (qpass/tritplane.py).

Three steps, alternated ``rounds`` times (the stored format is unchanged: two trit planes, per-(row, group)
scales, so the ternary kernel runs the result as it is):

1. Scales: the data-free decomposition weighted by H's diagonal (each input channel's mean x²) gives a first
   (α1, α2) per (row, group).
2. Trits, GPTQ-style: columns are rounded one at a time to the nearest of their (row, group)'s 9 levels
   ``{0, ±α2, ±α1, ±(α1+α2), ±(α1−α2)}`` and each column's error is pushed onto the columns not yet rounded
   through the inverse Hessian's Cholesky factor (the same update as qpass/gptq.py, with a 9-level grid per
   row and group instead of an integer grid); optionally columns in order of decreasing H diagonal (act-order:
   the group of a column is still its original one, so groups stay contiguous).
3. Scales again, exactly for those trits: per row, the 2·n_groups scales minimizing
   (w − Bα)ᵀ H (w − Bα) (B: the trit columns of each plane and group) — a small ridge-regularized solve.

Scales are rounded to fp16 (what the packed format stores) before the trits are chosen for them.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from .gptq import GPTQError, _damped_inverse_factor
from .tritplane import CODES, TritPlanes, decompose, reconstruct

__all__ = ["fit_with_hessian", "gptq_trits", "refit_scales", "hessian_error"]


def hessian_error(w: Tensor, w_hat: Tensor, hessian: Tensor) -> float:
    """Relative activation-weighted error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)."""
    d, w, h = (w_hat - w).double(), w.double(), hessian.double()
    return float(((d @ h) * d).sum() / ((w @ h) * w).sum().clamp_min(1e-300))


@torch.no_grad()
def gptq_trits(w: Tensor, hessian: Tensor, alpha1: Tensor, alpha2: Tensor, group_size: int, damp: float = 0.01,
               act_order: bool = True, block: int = 128) -> tuple[Tensor, Tensor]:
    """Trits ``t1, t2 [O, C]`` (int8) for the given scales ``[O, n_groups]``, rounded column by column with
    GPTQ's error feedback through ``hessian [C, C]``. Raises GPTQError on non-finite input or a Hessian no
    damping makes positive definite."""
    if not torch.isfinite(w).all() or not torch.isfinite(hessian).all():
        raise GPTQError("weight or Hessian has NaN/inf values")
    O, C = w.shape
    W, H = w.float().clone(), hessian.float().clone()
    dead = torch.diag(H) <= 0  # channels never active: their weights cannot matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(C)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv, _ = _damped_inverse_factor(H, damp, torch.diag(H).mean())
    codes = torch.tensor(CODES, dtype=torch.float32)
    levels = alpha1.float()[:, :, None] * codes[:, 0] + alpha2.float()[:, :, None] * codes[:, 1]  # [O, ng, 9]
    group = perm // group_size
    K = torch.zeros(O, C, dtype=torch.long)
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1, E1, Hi = W[:, i1:i2].clone(), torch.zeros(O, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            lv = levels[:, int(group[i1 + i]), :]
            col = W1[:, i]
            k = (col[:, None] - lv).abs().argmin(1)  # ties: first in CODES (sparser trits)
            K[:, i1 + i] = k
            err = (col - lv.gather(1, k[:, None])[:, 0]) / Hi[i, i]
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    K = K[:, torch.argsort(perm)]
    ci = torch.tensor(CODES, dtype=torch.int8)
    return ci[K, 0].contiguous(), ci[K, 1].contiguous()


@torch.no_grad()
def refit_scales(w: Tensor, hessian: Tensor, t1: Tensor, t2: Tensor, group_size: int,
                 ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per row, the scales ``[O, n_groups]`` of each plane minimizing (w − ŵ) H (w − ŵ)ᵀ for fixed trits
    (normal equations of 2·n_groups unknowns per row, ``ridge`` × their mean diagonal added)."""
    O, C = w.shape
    G = group_size
    ng = -(-C // G)
    pad = ng * G - C
    H = hessian.float()
    T = (t1.float(), t2.float())
    # Z[p][:, h, :] = T_p restricted to group h, times H: one row of B_pᵀ H per (row, group)
    Z = [torch.stack([T[p][:, h * G:(h + 1) * G] @ H[h * G:(h + 1) * G] for h in range(ng)], 1) for p in range(2)]
    A = torch.empty(O, 2 * ng, 2 * ng, dtype=torch.float64)
    b = torch.empty(O, 2 * ng, dtype=torch.float64)
    for p in range(2):
        b[:, p * ng:(p + 1) * ng] = (Z[p] * w.float()[:, None, :]).sum(-1).double()
        for q in range(2):
            blk = torch.nn.functional.pad(Z[p] * T[q][:, None, :], (0, pad)).reshape(O, ng, ng, G).sum(-1)
            A[:, p * ng:(p + 1) * ng, q * ng:(q + 1) * ng] = blk.double()
    diag = A.diagonal(dim1=1, dim2=2)
    lam = ridge * diag.mean(1, keepdim=True).clamp_min(1e-30)
    A = A + torch.diag_embed(lam.expand_as(diag))
    a = torch.linalg.solve(A, b)
    return a[:, :ng].float(), a[:, ng:].float()


@torch.no_grad()
def fit_with_hessian(w: Tensor, hessian: Tensor, group_size: int, *, rounds: int = 2, act_order: bool = True,
                     damp: float = 0.01, **decompose_kw) -> TritPlanes:
    """Trit planes of ``w [O, C]`` minimizing the activation-weighted error for ``hessian [C, C]`` (module
    docstring). ``decompose_kw`` go to the data-free start (qpass.tritplane.decompose)."""
    if w.dim() != 2 or hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"expected w [O, C] and hessian [C, C], got {tuple(w.shape)} and {tuple(hessian.shape)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    t0 = time.perf_counter()
    w = w.float()
    start = decompose(w, group_size, col_weight=torch.diag(hessian).clamp_min(0), **decompose_kw)
    a1, a2 = start.alpha1, start.alpha2
    for _ in range(rounds):
        a1, a2 = a1.half().float(), a2.half().float()  # what the format stores
        t1, t2 = gptq_trits(w, hessian, a1, a2, group_size, damp, act_order)
        n1, n2 = refit_scales(w, hessian, t1, t2, group_size)
        ok = torch.isfinite(n1).all(1) & torch.isfinite(n2).all(1)  # a singular row keeps its scales
        a1, a2 = torch.where(ok[:, None], n1, a1), torch.where(ok[:, None], n2, a2)
    tp = TritPlanes(t1, t2, a1.half().float(), a2.half().float(), group_size)
    tp.stats.update(method="hessian", group_size=group_size, rounds=rounds,
                    start_output_error=hessian_error(w, reconstruct(start), hessian),
                    zero_frac_t1=float((t1 == 0).double().mean()), zero_frac_t2=float((t2 == 0).double().mean()),
                    seconds=time.perf_counter() - t0)
    tp.stats["output_error"] = hessian_error(w, reconstruct(tp), hessian)
    return tp

