"""GPTQ weight rounding (Frantar et al., 2022): quantize columns one at a time and push each column's rounding
error onto the columns not yet quantized through the inverse Hessian H = E[xᵀx] of the layer's input.

Produces the same QuantizedWeight (per-row, per-group scales along the input dim) as round-to-nearest, so every
consumer of the plan (fake-quant, lowering) reads it unchanged.
"""
from __future__ import annotations

import torch

from .numerics import QuantizedWeight, expand_groups, qrange, quantize, range_qparams, weight_qparams


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
    info: dict | None = None,
    clip_search: str = "none",
    integer_steps: bool = False,
) -> QuantizedWeight:
    """GPTQ of `w [O, C]` given `hessian [C, C]` (any positive scale). With act_order or static_groups, group
    scales are fixed up front from `w` ("static groups": the RTN grid), so groups stay contiguous in the stored
    order; otherwise each group's scales come from the error-updated weights when the group starts.

    `damp` (a fraction of H's mean diagonal, ≥ 0) is added to H's diagonal. When the damped H is not positive
    definite (a rank-deficient XᵀX with damp 0, or rounding on a near-singular one) the damping is raised ×10
    at a time, up to MAX_DAMP; the damping actually used goes into `info["damp"]` (and `info["note"]` says why),
    so callers can report it. A non-finite weight or Hessian raises GPTQError (nothing to damp). integer_steps
    (numerics.integer_group_steps) needs the static grid."""
    qparams = range_qparams(clip_search)  # group scales: as RTN would set them
    if not torch.isfinite(w).all():
        raise GPTQError(f"weight has {int((~torch.isfinite(w)).sum())} NaN/inf values")
    if not torch.isfinite(hessian).all():
        raise GPTQError(f"Hessian has {int((~torch.isfinite(hessian)).sum())} NaN/inf values")
    if damp < 0:
        raise GPTQError(f"damp must be ≥ 0, got {damp}")
    static = act_order or static_groups
    if integer_steps and not static:
        raise GPTQError("integer group steps need static groups (gptq_static_groups or gptq_act_order): each row's "
                        "step is set from all of its groups before the first column is rounded")
    W = w.detach().float().clone()
    O, C = W.shape
    H = hessian.detach().float().to(W.device, copy=True)  # GPTQ runs where the weight is
    dead = torch.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    mean_diag = torch.diag(H).mean()
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(C, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    # Hinv's upper Cholesky factor: row i holds the update weights for column i over the remaining columns.
    Hinv, used = _damped_inverse_factor(H, damp, mean_diag)
    if info is not None:
        info["damp"] = used
        if used != damp:
            info["note"] = (f"GPTQ: Hessian not positive definite with damp {damp:g}; "
                            f"damping raised to {used:g} of its mean diagonal")

    qmin, qmax = qrange(bits, symmetric)
    gs = group_size or C
    n_groups = -(-C // gs)
    scale = torch.zeros(O, n_groups, device=W.device)
    zero = None if symmetric else torch.zeros(O, n_groups, device=W.device)
    if static:  # static groups, from the original weight
        s, z = weight_qparams(w.float(), bits, group_size, symmetric, clip_ratio, clip_search, integer_steps)
        scale = s if group_size else s.expand(O, 1).clone()
        if z is not None:
            zero = z if group_size else z.expand(O, 1).clone()
    inv = torch.argsort(perm)
    perm_host = perm.tolist()  # read per column: one device sync instead of one per column
    Q = torch.zeros_like(W)
    with _one_cpu_thread(W.device):
        _columns(W, Q, Hinv, perm_host, scale, zero, gs, C, block, static, qparams, bits, symmetric, clip_ratio, qmin,
                 qmax)
    Q = Q[:, inv]
    g = group_size if group_size else None
    codes = quantize(Q, scale if g else scale, zero, bits, g)
    return QuantizedWeight(codes, scale, zero, bits, group_size)


class _one_cpu_thread:
    """On the CPU, one intra-op thread for the column loop: its ops are a few hundred elements each, where
    threads only add barrier waits (10x the time on a loaded 2-core machine, measured), and restore after."""

    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"

    def __enter__(self):
        if self.cpu:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.cpu:
            torch.set_num_threads(self.threads)


def _columns(W, Q, Hinv, perm_host, scale, zero, gs, C, block, static, qparams, bits, symmetric, clip_ratio, qmin,
             qmax) -> None:
    """GPTQ's column loop, in place: Q gets the rounded columns, W the propagated errors, scale/zero the groups."""
    O = W.shape[0]
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1, E1, Hi = W[:, i1:i2].clone(), torch.zeros(O, i2 - i1, device=W.device), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = int(perm_host[col])
            g = orig // gs
            if not static and orig % gs == 0:  # a new group starts: scales from the error-updated weights
                rest = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, : min(gs, C - orig)]
                s, z = qparams(rest, bits, None, symmetric, clip_ratio)
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


MAX_DAMP = 10.0  # relative to the mean diagonal; beyond it GPTQ is near round-to-nearest anyway


class GPTQError(ValueError):
    """GPTQ cannot run on this layer (non-finite inputs, or a Hessian no damping makes positive definite)."""


def _damped_inverse_factor(H: torch.Tensor, damp: float, mean_diag: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(upper Cholesky factor of (H + d·mean_diag·I)⁻¹, d) for the first d in damp, 10·damp, ... ≤ MAX_DAMP
    (starting at 1e-6 when damp is 0) for which both factorizations succeed and are finite."""
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    d = damp
    while True:
        L, info = torch.linalg.cholesky_ex(H + eye * d * mean_diag)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                return U, d
        if d >= MAX_DAMP:
            raise GPTQError(f"Hessian is not positive definite even with damping {d:g} of its mean diagonal")
        d = min(MAX_DAMP, d * 10 if d > 0 else 1e-6)


def layer_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """Relative output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) implied by the Hessian."""
    d = (w_hat - w).float()
    return float(((d @ hessian) * d).sum() / ((w.float() @ hessian) * w.float()).sum().clamp_min(1e-30))


__all__ = ["GPTQError", "gptq_quantize", "layer_error", "expand_groups"]
