"""GPTQ weight rounding (Frantar et al., 2022): quantize columns one at a time and push each column's rounding
error onto the columns not yet quantized through the inverse Hessian H = E[xᵀx] of the layer's input.

Produces the same QuantizedWeight (per-row, per-group scales along the input dim) as round-to-nearest, so every
consumer of the plan (fake-quant, lowering) reads it unchanged.
"""
from __future__ import annotations

import torch

from .numerics import QuantizedWeight, compute_qparams, expand_groups, qrange, quantize


def _quant_col(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int, qmax: int) -> torch.Tensor:
    q = torch.round(w / scale)
    if zero is not None:
        return (q + zero).clamp(qmin, qmax).sub(zero).mul(scale)
    return q.clamp(qmin, qmax).mul(scale)


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    damp: float = 0.01,
    act_order: bool = False,
    block: int = 128,
    static_groups: bool = False,
) -> QuantizedWeight:
    """GPTQ of `w [O, C]` given `hessian [C, C]` (any positive scale). With act_order or static_groups, group
    scales are fixed up front from `w` ("static groups": the RTN grid), so groups stay contiguous in the stored
    order; otherwise each group's scales come from the error-updated weights when the group starts."""
    static = act_order or static_groups
    W = w.detach().float().clone()
    O, C = W.shape
    H = hessian.detach().float().clone()
    dead = torch.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += torch.eye(C) * damp * torch.diag(H).mean()
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(C)
    W, H = W[:, perm], H[perm][:, perm]
    # Hinv's upper Cholesky factor: row i holds the update weights for column i over the remaining columns.
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)

    qmin, qmax = qrange(bits, symmetric)
    gs = group_size or C
    n_groups = -(-C // gs)
    scale = torch.zeros(O, n_groups)
    zero = None if symmetric else torch.zeros(O, n_groups)
    if static:  # static groups, from the original weight
        s, z = compute_qparams(w.float(), bits, group_size, symmetric, clip_ratio)
        scale = s if group_size else s.expand(O, 1).clone()
        if z is not None:
            zero = z if group_size else z.expand(O, 1).clone()
    inv = torch.argsort(perm)
    Q = torch.zeros_like(W)
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1, E1, Hi = W[:, i1:i2].clone(), torch.zeros(O, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = int(perm[col])
            g = orig // gs
            if not static and orig % gs == 0:  # a new group starts: scales from the error-updated weights
                rest = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, : min(gs, C - orig)]
                s, z = compute_qparams(rest, bits, None, symmetric, clip_ratio)
                scale[:, g] = s[:, 0]
                if zero is not None:
                    zero[:, g] = z[:, 0]
            wc = W1[:, i]
            q = _quant_col(wc, scale[:, g], None if zero is None else zero[:, g], qmin, qmax)
            Q[:, col] = q
            err = (wc - q) / Hi[i, i]
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    Q = Q[:, inv]
    g = group_size if group_size else None
    codes = quantize(Q, scale if g else scale, zero, bits, g)
    return QuantizedWeight(codes, scale, zero, bits, group_size)


def layer_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """Relative output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) implied by the Hessian."""
    d = (w_hat - w).float()
    return float(((d @ hessian) * d).sum() / ((w.float() @ hessian) * w.float()).sum().clamp_min(1e-30))


__all__ = ["gptq_quantize", "layer_error", "expand_groups"]
