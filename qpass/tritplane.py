"""PTQTP trit-plane decomposition (arXiv 2509.16989): ``W ≈ α1·T1 + α2·T2`` per (row, group).

Pure torch, no graph code. Every (row, group) block ``w ∈ R^G`` of a weight ``[O, C]`` (groups run along the
input dim C; the last group may be shorter) gets two trit vectors ``t1, t2 ∈ {-1, 0, 1}^G`` and two scales, so
each block can represent the 9 levels ``{0, ±α2, ±α1, ±(α1+α2), ±(α1−α2)}``.

The solve alternates (i) the closed-form 2×2 ridge solve for ``(α1, α2)`` given the trits and (ii) the exact
per-element argmin over the 9 trit pairs given the scales. Both are vectorized over every block at once.

Two implementations of the same alternation:

* ``method="paper"`` — the straightforward version of algorithms.md §2: start from ``t1 = t2 = sign(w)``, and
  do the 9-way search literally, element by element (a ``[blocks, G, 9]`` argmin). Kept as the reference.
* ``method="sorted"`` (default) — identical maths, computed on each block's sorted ``|w|``. Because the levels
  are symmetric, the 9-way argmin for ``w`` is the nearest of the 5 non-negative levels to ``|w|`` (sign taken
  from ``w``), and nearest-level assignment on sorted data is 4 thresholds (midpoints between adjacent levels).
  With prefix sums of ``|w|`` the 2×2 normal equations and the block error need only 4 binary searches per
  block, so an iteration costs O(log G) per block instead of O(9·G). That makes it cheap to run the
  alternation from several starting points per block and keep the best (``n_starts``), which is where the
  accuracy gain comes from (the alternation is Lloyd's algorithm on a 2-parameter codebook and gets stuck in
  local minima from the sign(w) start). The final trits are assigned once, per element, in the original layout.

Tie-breaking (both methods): among trit pairs at equal distance, the first in ``CODES`` wins — sparser pairs
first (``(0,0)``, then one zero, then none), plane 1 before plane 2, ``+`` before ``-``.

Scales are returned canonical (``α1 ≥ α2 ≥ 0``: plane 1 is the major plane; relabelling trits does not change
the level set) and, by default, rounded to fp16 (what the packed format stores) with the trits re-assigned
for the rounded scales.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["CODES", "TritPlanes", "decompose", "reconstruct", "nearest_trits", "bits_per_weight"]

# The 9 trit pairs (c1, c2) in tie-breaking order.
CODES = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))

# Non-negative-side slots used by the sorted method, listed in CODES order (their ranks there: 0, 1, 3, 5, 6),
# levels for canonical α1 ≥ α2 ≥ 0: 0, α1, α2, α1+α2, α1−α2.
_SLOT_C1 = (0, 1, 0, 1, 1)
_SLOT_C2 = (0, 0, 1, 1, -1)


@dataclass
class TritPlanes:
    """Two ternary planes and per-(row, group) scales: ``W ≈ α1·T1 + α2·T2``."""

    t1: Tensor  # int8 [O, C], values in {-1, 0, 1}
    t2: Tensor  # int8 [O, C]
    alpha1: Tensor  # float32 [O, n_groups]
    alpha2: Tensor  # float32 [O, n_groups]
    group_size: int
    stats: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.t1.shape)

    @property
    def n_groups(self) -> int:
        return self.alpha1.shape[1]


def bits_per_weight(group_size: int, packing: str = "2bit", scale_bits: int = 16) -> float:
    """Storage cost per weight: two planes (2 bits each, or a 9-level code at log2 9 bits) + two scales/group."""
    code = {"2bit": 4.0, "base3": math.log2(9), "base3_bytes": 8.0 / 2.5}[packing]  # 5 trits/byte → 1.6 b/trit
    return code + 2 * scale_bits / group_size


def reconstruct(tp: TritPlanes, dtype: torch.dtype = torch.float32) -> Tensor:
    """Dense ``[O, C]`` weight from the planes (α expanded over each group; the last group may be short)."""
    O, C = tp.t1.shape
    G = tp.group_size
    a1 = tp.alpha1.to(dtype).repeat_interleave(G, dim=1)[:, :C]
    a2 = tp.alpha2.to(dtype).repeat_interleave(G, dim=1)[:, :C]
    return a1 * tp.t1.to(dtype) + a2 * tp.t2.to(dtype)


# ----------------------------------------------------------------------------------------------------------
# shared pieces


def _ridge_solve(a11, a12, a22, b1, b2, lam0=1e-8, lam_max=1.0, rcond_min=1e-10):
    """Closed-form 2×2 ridge solve ``(SᵀS + λI) α = Sᵀw``, vectorized.

    λ starts at ``lam0`` and is multiplied by 10 while ``A`` is ill-conditioned (λ_min/λ_max < rcond_min), up to
    ``lam_max``. An all-zero block gives α = 0.
    """
    lam = torch.full_like(a11, lam0)
    for _ in range(12):
        A11, A22 = a11 + lam, a22 + lam
        det = A11 * A22 - a12 * a12
        lmax = 0.5 * (A11 + A22 + torch.sqrt((A11 - A22) ** 2 + 4 * a12 * a12))
        ill = (det / lmax) < rcond_min * lmax  # λ_min = det / λ_max
        ill &= lam < lam_max
        if not bool(ill.any()):
            break
        lam = torch.where(ill, torch.clamp(lam * 10, max=lam_max), lam)
    A11, A22 = a11 + lam, a22 + lam
    det = A11 * A22 - a12 * a12
    return (A22 * b1 - a12 * b2) / det, (A11 * b2 - a12 * b1) / det


def _canonical(al1, al2):
    """Same level set with α1 ≥ α2 ≥ 0."""
    x, y = al1.abs(), al2.abs()
    return torch.maximum(x, y), torch.minimum(x, y)


def nearest_trits(w: Tensor, al1: Tensor, al2: Tensor, chunk: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """Exhaustive 9-way search: for each element of ``w [B, G]`` the pair (c1, c2) minimizing
    ``|w − α1 c1 − α2 c2|`` with ``α [B]``; ties go to the first pair in ``CODES``. Returns int8 tensors."""
    codes = torch.tensor(CODES, dtype=w.dtype, device=w.device)
    B, G = w.shape
    out = torch.empty(B, G, dtype=torch.long, device=w.device)
    step = max(1, chunk // max(1, 9 * G))
    for s in range(0, B, step):
        lv = al1[s : s + step, None] * codes[:, 0] + al2[s : s + step, None] * codes[:, 1]  # [b, 9]
        d = (w[s : s + step, :, None] - lv[:, None, :]).abs_()
        out[s : s + step] = d.argmin(-1)  # first minimum → tie order of CODES
    ci = torch.tensor(CODES, dtype=torch.int8, device=w.device)
    return ci[out, 0], ci[out, 1]


def _blocks(weight: Tensor, G: int, dtype):
    O, C = weight.shape
    ng = -(-C // G)
    pad = ng * G - C
    w = weight.to(dtype)
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(O * ng, G), ng, pad


def _finish(weight, G, ng, pad, t1, t2, al1, al2, stats, t0):
    O, C = weight.shape
    t1 = t1.reshape(O, ng * G)[:, :C].contiguous()
    t2 = t2.reshape(O, ng * G)[:, :C].contiguous()
    tp = TritPlanes(t1, t2, al1.reshape(O, ng).float(), al2.reshape(O, ng).float(), G, stats)
    Wf = weight.double()
    err = (reconstruct(tp, torch.float64) - Wf).norm() / Wf.norm().clamp_min(1e-300)
    stats["rel_fro_error"] = float(err)
    stats["zero_frac_t1"] = float((t1 == 0).double().mean())
    stats["zero_frac_t2"] = float((t2 == 0).double().mean())
    stats["seconds"] = time.perf_counter() - t0
    return tp


# ----------------------------------------------------------------------------------------------------------
# method="paper": the literal alternation


def _decompose_paper(weight, G, max_iter, tol, dtype, fp16_scales):
    t0 = time.perf_counter()
    w, ng, pad = _blocks(weight, G, dtype)
    B = w.shape[0]
    t1 = torch.sign(w)
    t2 = t1.clone()
    al1 = torch.ones(B, dtype=dtype, device=w.device)
    al2 = torch.ones_like(al1)
    conv = torch.zeros(B, dtype=torch.bool, device=w.device)
    iters = torch.zeros(B, dtype=torch.long, device=w.device)
    for _ in range(max_iter):
        act = (~conv).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        wa, s1, s2 = w[act], t1[act], t2[act]
        n1, n2 = _ridge_solve((s1 * s1).sum(1), (s1 * s2).sum(1), (s2 * s2).sum(1), (s1 * wa).sum(1),
                              (s2 * wa).sum(1))
        done = torch.sqrt((n1 - al1[act]) ** 2 + (n2 - al2[act]) ** 2) < tol
        al1[act], al2[act] = n1, n2
        iters[act] += 1
        c1, c2 = nearest_trits(wa, n1, n2)
        t1[act], t2[act] = c1.to(dtype), c2.to(dtype)
        conv[act] = done
    al1, al2 = _canonical(al1, al2)  # relabel planes: same level set
    if fp16_scales:
        al1, al2 = al1.half().to(dtype), al2.half().to(dtype)
    c1, c2 = nearest_trits(w, al1, al2)
    stats = {"method": "paper", "group_size": G, "iters_mean": float(iters.double().mean()),
             "iters_max": int(iters.max()) if B else 0, "converged_frac": float(conv.double().mean())}
    return _finish(weight, G, ng, pad, c1, c2, al1, al2, stats, t0)


# ----------------------------------------------------------------------------------------------------------
# method="sorted": same alternation on sorted |w| with prefix sums, several starts per block


def _slot_tables(device, dtype):
    c1 = torch.tensor(_SLOT_C1, dtype=dtype, device=device)
    c2 = torch.tensor(_SLOT_C2, dtype=dtype, device=device)
    return c1, c2


def _thresholds(al1, al2):
    """Sorted non-negative levels and the 4 assignment thresholds for canonical (α1 ≥ α2 ≥ 0).

    Returns ``v [...,5]`` sorted levels, ``perm [...,5]`` slot of each, ``th [...,4]`` thresholds, ``low [...,4]``
    whether an element exactly on a threshold goes to the lower side. Duplicate levels keep only the slot that
    comes first in CODES; the others get empty intervals.
    """
    z = torch.zeros_like(al1)
    lv = torch.stack([z, al1, al2, al1 + al2, al1 - al2], -1)
    v, perm = torch.sort(lv, dim=-1, stable=True)  # stable: equal levels stay in CODES order
    dead = v[..., 1:] == v[..., :-1]  # [...,4]: sorted slot k+1 duplicates slot k
    th = 0.5 * (v[..., :-1] + v[..., 1:])
    # rank (= slot index, slots are in CODES order) of the surviving slot of each run of equal levels
    rr = [perm[..., 0]]
    for k in range(1, 5):
        rr.append(torch.where(dead[..., k - 1], rr[k - 1], perm[..., k]))
    low = [rr[k] < perm[..., k + 1] for k in range(4)]
    ths = [th[..., k] for k in range(4)]
    inf = torch.full_like(al1, math.inf)
    for k in range(3, -1, -1):  # a dead slot k+1 takes no elements: boundary k moves to boundary k+1
        nxt_th = inf if k == 3 else ths[k + 1]
        nxt_low = low[3] if k == 3 else low[k + 1]
        ths[k] = torch.where(dead[..., k], nxt_th, ths[k])
        low[k] = torch.where(dead[..., k], nxt_low, low[k])
    return v, perm, torch.stack(ths, -1), torch.stack(low, -1)


class _SortedBlocks:
    """Sorted |w| per block with prefix sums of (weight) and (weight·|w|)."""

    def __init__(self, w: Tensor, cw: Tensor):
        a, idx = torch.sort(w.abs(), dim=1)
        cw = torch.gather(cw, 1, idx)
        self.a = a.contiguous()
        z = torch.zeros(a.shape[0], 1, dtype=a.dtype, device=a.device)
        self.P0 = torch.cat([z, cw.cumsum(1)], 1)
        self.P1 = torch.cat([z, (cw * a).cumsum(1)], 1)
        self.Q = (cw * a * a).sum(1)

    def subset(self, idx):
        new = object.__new__(_SortedBlocks)
        new.a, new.P0, new.P1, new.Q = self.a[idx], self.P0[idx], self.P1[idx], self.Q[idx]
        return new


def _sorted_step(sb: _SortedBlocks, al1, al2, slot_c1, slot_c2):
    """One alternation step for α [B, S] (S starts per block): the exact assignment for α, its error,
    and the ridge solve for the next α."""
    B, S = al1.shape
    v, perm, th, low = _thresholds(al1, al2)
    thf = th.reshape(B, S * 4).contiguous()
    c_r = torch.searchsorted(sb.a, thf, right=True)
    c_l = torch.searchsorted(sb.a, thf, right=False)
    cnt = torch.where(low.reshape(B, S * 4), c_r, c_l).reshape(B, S, 4)
    G = sb.a.shape[1]
    bnd = torch.cat([torch.zeros_like(cnt[..., :1]), cnt, torch.full_like(cnt[..., :1], G)], -1)  # [B,S,6]
    bnd = bnd.reshape(B, S * 6)
    W = torch.gather(sb.P0, 1, bnd).reshape(B, S, 6).diff(dim=-1)  # [B,S,5] weight per sorted slot
    Sa = torch.gather(sb.P1, 1, bnd).reshape(B, S, 6).diff(dim=-1)
    c1, c2 = slot_c1[perm], slot_c2[perm]
    err = sb.Q[:, None] - 2 * (v * Sa).sum(-1) + (W * v * v).sum(-1)
    n1, n2 = _ridge_solve((W * c1 * c1).sum(-1), (W * c1 * c2).sum(-1), (W * c2 * c2).sum(-1),
                          (c1 * Sa).sum(-1), (c2 * Sa).sum(-1))
    n1, n2 = _canonical(n1, n2)
    return err, n1, n2


def _initial_alphas(sb: _SortedBlocks, starts, slot_c1, slot_c2):
    """Starting (α1, α2) per block: "sign" = the paper's start (t1 = t2 = sign(w), then one ridge solve);
    a float r = (α1 = s, α2 = r·s) with s = the least-squares scale of the codebook shape {0, ±r, ±1, ±(1±r)}
    at the block's RMS-based size. Returns [B, S] tensors."""
    B = sb.a.shape[0]
    tot_w = sb.P0[:, -1]
    nz = sb.P0[:, -1] - torch.gather(sb.P0, 1, torch.searchsorted(sb.a, torch.zeros(B, 1, dtype=sb.a.dtype,
                                                                                      device=sb.a.device),
                                                                  right=True)).squeeze(1)
    sum_a = sb.P1[:, -1]
    rms = torch.sqrt(sb.Q / tot_w.clamp_min(1e-300))
    out1, out2 = [], []
    for st in starts:
        if st == "sign":
            x1, x2 = _ridge_solve(nz, nz, nz, sum_a, sum_a)
        else:
            scale, r = st
            x1 = scale * rms
            x2 = r * x1
        x1, x2 = _canonical(x1, x2)
        out1.append(x1)
        out2.append(x2)
    return torch.stack(out1, 1), torch.stack(out2, 1)


DEFAULT_STARTS = ("sign", (1.0, 0.5), (1.2, 0.33), (1.6, 0.33), (1.0, 0.75), (2.0, 0.25))


def _decompose_sorted(weight, G, max_iter, tol, dtype, fp16_scales, starts, col_weight):
    t0 = time.perf_counter()
    dev = weight.device
    w, ng, pad = _blocks(weight, G, dtype)
    B = w.shape[0]
    O, C = weight.shape
    cw = torch.ones(C, dtype=dtype, device=dev) if col_weight is None else col_weight.to(dev, dtype)
    cw = torch.nn.functional.pad(cw, (0, pad)).reshape(1, ng, G).expand(O, ng, G).reshape(B, G)
    sb = _SortedBlocks(w, cw)
    slot_c1, slot_c2 = _slot_tables(dev, dtype)
    starts = list(starts)
    S = len(starts)
    al1, al2 = _initial_alphas(sb, starts, slot_c1, slot_c2)
    err = torch.full((B, S), math.inf, dtype=dtype, device=dev)
    iters = torch.zeros(B, S, dtype=torch.long, device=dev)
    conv = torch.zeros(B, S, dtype=torch.bool, device=dev)
    frozen = torch.zeros_like(conv)  # converged and evaluated at the α it keeps
    ids = torch.arange(B, device=dev)  # blocks still being iterated
    cur = sb
    a1w, a2w, ew, itw, cvw, fzw = al1, al2, err, iters, conv, frozen
    for it in range(max_iter + 1):
        e, n1, n2 = _sorted_step(cur, a1w, a2w, slot_c1, slot_c2)
        ew = torch.where(fzw, ew, e)  # error of the current α (exact assignment)
        fzw = cvw.clone()
        alive = ~fzw.all(1)
        n_alive = int(alive.sum())
        if it < max_iter and n_alive:
            done = torch.sqrt((n1 - a1w) ** 2 + (n2 - a2w) ** 2) <= tol * torch.sqrt(a1w**2 + a2w**2)
            upd = ~cvw
            a1w = torch.where(upd, n1, a1w)
            a2w = torch.where(upd, n2, a2w)
            itw = itw + upd.long()
            cvw = cvw | done
        if it == max_iter or n_alive == 0 or n_alive < 0.6 * ids.numel():
            # write back and compact the working set
            al1[ids], al2[ids], err[ids], iters[ids], conv[ids] = a1w, a2w, ew, itw, cvw
            if it == max_iter or n_alive == 0:
                break
            keep = alive.nonzero().squeeze(1)
            ids = ids[keep]
            cur = sb.subset(ids)
            a1w, a2w, ew, itw, cvw, fzw = a1w[keep], a2w[keep], ew[keep], itw[keep], cvw[keep], fzw[keep]
    best = err.argmin(1)
    b1 = al1.gather(1, best[:, None]).squeeze(1)
    b2 = al2.gather(1, best[:, None]).squeeze(1)
    if fp16_scales:
        b1, b2 = b1.half().to(dtype), b2.half().to(dtype)
    c1, c2 = _assign(w, b1, b2)
    itb = iters.gather(1, best[:, None]).squeeze(1)
    stats = {"method": "sorted", "group_size": G, "n_starts": S, "iters_mean": float(itb.double().mean()),
             "iters_max": int(itb.max()) if B else 0, "iters_all_starts_mean": float(iters.double().mean()),
             "converged_frac": float(conv.gather(1, best[:, None]).double().mean()),
             "converged_frac_all_starts": float(conv.double().mean()),
             "best_start_hist": torch.bincount(best, minlength=S).tolist()}
    return _finish(weight, G, ng, pad, c1, c2, b1, b2, stats, t0)


def _assign(w: Tensor, al1: Tensor, al2: Tensor, chunk: int = 1 << 22):
    """Nearest-level trits for w [B, G] and canonical α [B] via the thresholds (equals ``nearest_trits``)."""
    v, perm, th, low = _thresholds(al1, al2)
    B, G = w.shape
    c1t = torch.tensor(_SLOT_C1, dtype=torch.int8, device=w.device)
    c2t = torch.tensor(_SLOT_C2, dtype=torch.int8, device=w.device)
    o1 = torch.empty(B, G, dtype=torch.int8, device=w.device)
    o2 = torch.empty_like(o1)
    step = max(1, chunk // max(1, G))
    for s in range(0, B, step):
        ws = w[s : s + step]
        a = ws.abs()
        slot = torch.zeros(a.shape, dtype=torch.long, device=w.device)
        for k in range(4):
            t = th[s : s + step, k : k + 1]
            lo = low[s : s + step, k : k + 1]
            slot += torch.where(lo, a > t, a >= t).long()
        sl = torch.gather(perm[s : s + step], 1, slot)
        sg = torch.sign(ws).to(torch.int8)
        o1[s : s + step] = c1t[sl] * sg
        o2[s : s + step] = c2t[sl] * sg
    return o1, o2


# ----------------------------------------------------------------------------------------------------------


def decompose(weight: Tensor, group_size: int, *, max_iter: int = 50, tol: float = 1e-4,
              dtype: torch.dtype = torch.float64, method: str = "sorted", starts=DEFAULT_STARTS,
              col_weight: Tensor | None = None, fp16_scales: bool = True) -> TritPlanes:
    """Decompose ``weight [O, C]`` into two trit planes with per-(row, group) scales (groups along C).

    method="sorted" (default): several starts per block (``starts``), each alternated to convergence
    (``‖Δα‖ ≤ tol·‖α‖``) or ``max_iter``, the lowest-error one kept. ``col_weight [C]`` (optional, ≥ 0) makes the
    scale solve minimize Σ_c col_weight[c]·(w_c − ŵ_c)² instead of the plain squared error.
    method="paper": the literal algorithm (sign start, elementwise 9-way search, absolute tol ``‖Δα‖ < tol``).
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got {tuple(weight.shape)}")
    if group_size < 1:
        raise ValueError("group_size must be >= 1")
    with torch.no_grad():
        if method == "paper":
            if col_weight is not None:
                raise ValueError("col_weight needs method='sorted'")
            return _decompose_paper(weight, group_size, max_iter, tol, dtype, fp16_scales)
        if method == "sorted":
            return _decompose_sorted(weight, group_size, max_iter, tol, dtype, fp16_scales, starts, col_weight)
    raise ValueError(f"unknown method {method!r}")
