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
  alternation from several starting points per block and keep the best (``starts``), which is where the
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


_PERM_LO = (0, 2, 4, 1, 3)  # sorted slots when α2 ≤ α1 − α2: 0, α2, α1−α2, α1, α1+α2
_PERM_HI = (0, 4, 2, 1, 3)  # otherwise:                      0, α1−α2, α2, α1, α1+α2


def _thresholds(al1, al2):
    """The 4 assignment thresholds on |w| for canonical (α1 ≥ α2 ≥ 0).

    Returns ``lo`` (bool, α2 ≤ α1−α2: which of the two slot orders applies), ``eq23`` (sorted slots 2 and 3
    swapped: max(α2, α1−α2) == α1), ``v`` (list of the 5 sorted levels),
    ``th`` and ``low`` (lists of 4): element ``a`` goes above boundary k if ``a > th[k]``, or ``a == th[k]`` and
    not ``low[k]``. Equal levels keep only the slot that comes first in CODES (the others get empty intervals);
    an element exactly between two levels goes to the one first in CODES.
    """
    d = al1 - al2
    lo = al2 <= d
    z = torch.zeros_like(al1)
    v = [z, torch.minimum(al2, d), torch.maximum(al2, d), al1, al1 + al2]
    # CODES rank of each sorted slot (slot index = rank order): 0, {2,4} or {4,2}, 1, 3
    # If max(α2, α1−α2) == α1 (α2 = α1, or α2 = 0), the (1,0) slot must come first among the equal levels.
    eq23 = v[2] == v[3]
    r1 = torch.where(lo, 2, 4)
    r2 = torch.where(lo, 4, 2)
    ranks = [0, r1, torch.where(eq23, 1, r2), torch.where(eq23, r2, 1), 3]
    dead = [v[k + 1] == v[k] for k in range(4)]  # sorted slot k+1 duplicates slot k (the better-ranked)
    rr = [ranks[0]]  # rank of the surviving slot of the run of equal levels ending at k
    for k in range(1, 5):
        rr.append(torch.where(dead[k - 1], rr[k - 1], ranks[k]))
    low = [torch.as_tensor(rr[k] < ranks[k + 1]) if not torch.is_tensor(rr[k] < ranks[k + 1]) else
           rr[k] < ranks[k + 1] for k in range(4)]
    low = [x.expand_as(al1) for x in low]
    th = [0.5 * (v[k] + v[k + 1]) for k in range(4)]
    for k in range(3, -1, -1):  # a dead slot k+1 takes no elements: boundary k moves to boundary k+1
        nxt_th = torch.full_like(al1, math.inf) if k == 3 else th[k + 1]
        nxt_low = low[3] if k == 3 else low[k + 1]
        th[k] = torch.where(dead[k], nxt_th, th[k])
        low[k] = torch.where(dead[k], nxt_low, low[k])
    return lo, eq23, v, th, low


class _SortedBlocks:
    """Rows of sorted |w| (one per block, or per (block, start) pair after ``subset``) with prefix sums of the
    weights and of weight·|w|. The prefix sums are shared, flat, and reached through ``base`` (row offset)."""

    def __init__(self, w: Tensor, cw: Tensor | None, n_real: Tensor):
        """``cw`` None: unit weights (zero padding then needs no weights: padded zeros always take level 0)."""
        a, idx = torch.sort(w.abs(), dim=1)
        B, G = a.shape
        self.a = a.contiguous()
        z = torch.zeros(B, 1, dtype=a.dtype, device=a.device)
        if cw is None:
            self.P0f = None
            P1 = torch.cat([z, a.cumsum(1)], 1)
            self.Q = (a * a).sum(1)
            self.P0_tot = torch.full_like(self.Q, G)
        else:
            cw = torch.gather(cw, 1, idx)
            P0 = torch.cat([z, cw.cumsum(1)], 1)
            P1 = torch.cat([z, (cw * a).cumsum(1)], 1)
            self.Q = (cw * a * a).sum(1)
            self.P0_tot = P0[:, -1].clone()
            self.P0f = P0.reshape(-1)
        self.P1_tot = P1[:, -1].clone()
        self.P1f = P1.reshape(-1)
        self.base = torch.arange(B, device=a.device) * (G + 1)
        self.N = n_real  # weight of the real (non-padding) elements

    def prefix(self, which: str, cnt: Tensor) -> Tensor:
        """Prefix sum (``"P0"`` weight, ``"P1"`` weight·|w|) over the first ``cnt [rows, k]`` sorted elements."""
        if which == "P0" and self.P0f is None:
            return cnt.to(self.a.dtype)
        flat = self.P0f if which == "P0" else self.P1f
        return flat[self.base[:, None] + cnt]

    def count_le(self, x: Tensor) -> Tensor:
        """Σ weight over elements with |w| ≤ x (x [rows, k])."""
        return self.prefix("P0", torch.searchsorted(self.a, x, right=True))

    def subset(self, idx):
        new = object.__new__(_SortedBlocks)
        new.P0f, new.P1f = self.P0f, self.P1f
        for k in ("a", "Q", "P0_tot", "P1_tot", "base", "N"):
            setattr(new, k, getattr(self, k)[idx])
        return new


def _sorted_step(sb: _SortedBlocks, al1, al2):
    """One alternation step for α [B, S] (S starts per block): the exact assignment for α, its error, and the
    ridge solve for the next α (canonicalized)."""
    B, S = al1.shape
    lo, eq23, v, th, low = _thresholds(al1, al2)
    thf = torch.stack(th, -1).reshape(B, S * 4)
    cnt = torch.searchsorted(sb.a, thf, right=False)  # #{a < th}
    lowf = torch.stack(low, -1).reshape(B, S * 4)
    G = sb.a.shape[1]
    # elements equal to a threshold that go to the lower side: count #{a <= th} there instead
    on = torch.gather(sb.a, 1, cnt.clamp(max=G - 1)) == thf
    on &= lowf
    if bool(on.any()):
        cnt = torch.where(on, torch.searchsorted(sb.a, thf, right=True), cnt)
    W = sb.prefix("P0", cnt).reshape(B, S, 4)
    P = sb.prefix("P1", cnt).reshape(B, S, 4)
    Wt, Pt = sb.P0_tot[:, None], sb.P1_tot[:, None]
    Wb, Pb = W.unbind(-1), P.unbind(-1)
    # per sorted slot 1..4: weight and Σ weight·|w| of its interval
    n = [Wb[1] - Wb[0], Wb[2] - Wb[1], Wb[3] - Wb[2], Wt - Wb[3]]
    m = [Pb[1] - Pb[0], Pb[2] - Pb[1], Pb[3] - Pb[2], Pt - Pb[3]]
    err = sb.Q[:, None] - 2 * (v[1] * m[0] + v[2] * m[1] + v[3] * m[2] + v[4] * m[3]) + (
        n[0] * v[1] * v[1] + n[1] * v[2] * v[2] + n[2] * v[3] * v[3] + n[3] * v[4] * v[4])
    # back to code slots: (0,1) [α2], (1,-1) [α1−α2], (1,0) [α1], (1,1) [α1+α2]
    n10, m10 = torch.where(eq23, n[1], n[2]), torch.where(eq23, m[1], m[2])
    nb, mb = torch.where(eq23, n[2], n[1]), torch.where(eq23, m[2], m[1])  # slot (1,-1) if lo else (0,1)
    n01, n1m = torch.where(lo, n[0], nb), torch.where(lo, nb, n[0])
    m01, m1m = torch.where(lo, m[0], mb), torch.where(lo, mb, m[0])
    n11, m11 = n[3], m[3]
    n1, n2 = _ridge_solve(n10 + n11 + n1m, n11 - n1m, n01 + n11 + n1m, m10 + m11 + m1m, m01 + m11 - m1m)
    n1, n2 = _canonical(n1, n2)
    return err, n1, n2


def _initial_alphas(sb: _SortedBlocks, starts):
    """Starting (α1, α2) per block, [B, S]. ``"sign"`` = the paper's start (t1 = t2 = sign(w), one ridge solve);
    ``(s, r)`` = (α1, α2) = (s·rms, r·s·rms) with rms the block's root-mean-square weight."""
    B = sb.a.shape[0]
    zero = torch.zeros(B, 1, dtype=sb.a.dtype, device=sb.a.device)
    nz = sb.N - sb.count_le(zero).squeeze(1) + (sb.P0_tot - sb.N)  # padding (|w| = 0) is in count_le
    sum_a = sb.P1_tot
    rms = torch.sqrt(sb.Q / sb.N.clamp_min(1e-300))
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


# Chosen greedily on SmolLM2 layers (G = 64): each start adds the most error reduction given the previous ones.
DEFAULT_STARTS = ((1.4, 0.6), (1.8, 0.6), (1.4, 0.15), (1.2, 0.6), (2.4, 0.9), (1.8, 0.15), (1.4, 0.9), (1.4, 0.4))


def _lloyd(sb: _SortedBlocks, al1, al2, max_iter, tol, prune_after=2, prune_margin=0.05):
    """Alternate from every start (α [B, S]) until ‖Δα‖ ≤ tol·‖α‖ or max_iter updates. Each (block, start) pair
    is its own row, dropped from the working set when it converges (it keeps the α its error was evaluated at,
    within tol of the fixed point). After ``prune_after`` updates, pairs whose error is more than
    ``prune_margin`` above their block's best are stopped too (None: never). Returns α, its exact error,
    iterations and convergence flags, all [B, S]."""
    B, S = al1.shape
    dtype, dev = al1.dtype, al1.device
    A1, A2 = al1.reshape(-1).clone(), al2.reshape(-1).clone()
    E = torch.full((B * S,), math.inf, dtype=dtype, device=dev)
    IT = torch.zeros(B * S, dtype=torch.long, device=dev)
    CV = torch.zeros(B * S, dtype=torch.bool, device=dev)
    ids = torch.arange(B * S, device=dev)
    cur = sb.subset(ids // S) if S > 1 else sb
    a1, a2 = A1.clone(), A2.clone()
    act = torch.ones(B * S, dtype=torch.bool, device=dev)
    itw = torch.zeros(B * S, dtype=torch.long, device=dev)
    for it in range(max_iter + 1):
        e, n1, n2 = _sorted_step(cur, a1[:, None], a2[:, None])
        e, n1, n2 = e[:, 0], n1[:, 0], n2[:, 0]
        E[ids[act]] = e[act]
        stop = (n1 - a1) ** 2 + (n2 - a2) ** 2 <= (tol * tol) * (a1 * a1 + a2 * a2)
        CV[ids[act & stop]] = True
        if it == max_iter:
            stop = torch.ones_like(stop)
        elif it == prune_after and S > 1 and prune_margin is not None:
            best = E.view(B, S).min(1).values
            stop |= e > (1 + prune_margin) * best[ids // S]
        stop &= act
        A1[ids[stop]], A2[ids[stop]], IT[ids[stop]] = a1[stop], a2[stop], itw[stop]
        act &= ~stop
        n_act = int(act.sum())
        if n_act == 0:
            break
        a1 = torch.where(act, n1, a1)
        a2 = torch.where(act, n2, a2)
        itw += act.long()
        if n_act < 0.6 * act.numel():
            keep = act.nonzero().squeeze(1)
            ids, a1, a2, itw = ids[keep], a1[keep], a2[keep], itw[keep]
            cur = cur.subset(keep)
            act = torch.ones(keep.numel(), dtype=torch.bool, device=dev)
    return A1.view(B, S), A2.view(B, S), E.view(B, S), IT.view(B, S), CV.view(B, S)


def _decompose_sorted(weight, G, max_iter, tol, dtype, fp16_scales, starts, col_weight, prune_margin):
    t0 = time.perf_counter()
    dev = weight.device
    w, ng, pad = _blocks(weight, G, dtype)
    B = w.shape[0]
    O, C = weight.shape
    n_real = torch.full((ng,), float(G), dtype=dtype, device=dev)
    n_real[-1] = G - pad
    if col_weight is None:
        cw = None
    else:
        cw = torch.nn.functional.pad(col_weight.to(dev, dtype), (0, pad)).reshape(1, ng, G).expand(O, ng, G)
        cw = cw.reshape(B, G)
        n_real = cw.sum(1)
    sb = _SortedBlocks(w, cw, n_real.repeat(O) if cw is None else n_real)
    starts = list(starts)
    S = len(starts)
    al1, al2 = _initial_alphas(sb, starts)
    al1, al2, err, iters, conv = _lloyd(sb, al1, al2, max_iter, tol, prune_margin=prune_margin)
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
    lo, eq23, v, th, low = _thresholds(al1, al2)
    th = torch.stack(th, 1)
    low = torch.stack(low, 1)
    B, G = w.shape
    dev = w.device
    # per block, code of each sorted slot (slot orders _PERM_LO / _PERM_HI)
    perms = [list(_PERM_HI), list(_PERM_LO)]
    perms += [p[:2] + [p[3], p[2]] + p[4:] for p in perms]  # eq23: slots 2 and 3 swapped
    c1s = torch.tensor([[_SLOT_C1[i] for i in p] for p in perms], dtype=torch.int8, device=dev)
    c2s = torch.tensor([[_SLOT_C2[i] for i in p] for p in perms], dtype=torch.int8, device=dev)
    which = lo.long() + 2 * eq23.long()
    c1s, c2s = c1s[which], c2s[which]
    o1 = torch.empty(B, G, dtype=torch.int8, device=dev)
    o2 = torch.empty_like(o1)
    step = max(1, chunk // max(1, G))
    for s in range(0, B, step):
        ws = w[s : s + step]
        a = ws.abs()
        slot = torch.zeros(a.shape, dtype=torch.long, device=dev)
        for k in range(4):
            t = th[s : s + step, k : k + 1]
            lw = low[s : s + step, k : k + 1]
            slot += torch.where(lw, a > t, a >= t).long()
        sg = torch.sign(ws).to(torch.int8)
        o1[s : s + step] = torch.gather(c1s[s : s + step], 1, slot) * sg
        o2[s : s + step] = torch.gather(c2s[s : s + step], 1, slot) * sg
    return o1, o2


# ----------------------------------------------------------------------------------------------------------


def decompose(weight: Tensor, group_size: int, *, max_iter: int = 50, tol: float = 1e-4,
              dtype: torch.dtype = torch.float64, method: str = "sorted", starts=DEFAULT_STARTS,
              col_weight: Tensor | None = None, fp16_scales: bool = True,
              prune_margin: float | None = 0.05) -> TritPlanes:
    """Decompose ``weight [O, C]`` into two trit planes with per-(row, group) scales (groups along C).

    method="sorted" (default): several starts per block (``starts``), each alternated to convergence
    (``‖Δα‖ ≤ tol·‖α‖``) or ``max_iter``, the lowest-error one kept; after 2 updates a start more than
    ``prune_margin`` (relative squared error) above its block's best is dropped (None: never). ``col_weight [C]`` (optional, ≥ 0) makes the
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
            return _decompose_sorted(weight, group_size, max_iter, tol, dtype, fp16_scales, starts, col_weight,
                                     prune_margin)
    raise ValueError(f"unknown method {method!r}")
