"""SALE (arXiv 2505.24179) in pure torch: the references the Triton kernels of kernels/sale/ are tested against, and
the CPU path of the `qpass::sale_*` ops.  See docs/sale.md.

Layout as SDPA: q [B, H, S, D], k / v [B, Hkv, S, D] (H = G * Hkv, GQA without repeat_kv).  Scores are
`scale * q·k`; softmax over the causal keys.

1. Quantize (`sale_quantize_ref`): subtract the sequence mean (q̄ per query head, k̄ per KV head), symmetric
   int4 with one scale per row (per query / per key: the finest granularity; the scale is applied after the
   integer product, so any row grouping costs the same inside the kernel).  Two int4 values per byte: byte c
   of a row holds dim c (low nibble) and dim c + D/2 (high nibble), so the kernel's product is two int8 dots
   over D/2 with no interleaving.  Up to a per-row constant (softmax-invariant), q_i·k_j equals
   q̃_i·k̃_j + q̄·k̃_j + q_i·k̄, the last two being a per-key bias (`k_bias`, per query head) and a per-row
   bias (`q_bias`) — the estimate is `qs_i ks_j (Q̃int·K̃int)_ij + k_bias_j + q_bias_i`.
2. Select (`sale_block_scores_ref`, `sale_select_ref`): per (BLOCK_M queries × BLOCK_N keys) block.  Blocks
   holding a sink key (< `sink`), overlapping the local window (`window` keys before the query block) or the
   diagonal are always kept and give each row its exact max m̃_i and sum l̃_i.  Every other causal block gets
   the log relative attention score R = max_{i,j∈block} (scale·S̃_ij − m̃_i − ln l̃_i) from the estimate and is
   kept iff R > ln τ_h.  τ_h ≤ `tau_dense` keeps every causal block (a dense head).
3. Attend (`sale_attention_ref`): causal softmax attention restricted to the kept blocks.

`model_window` W (None: full causal): the model's own sliding window, HF's convention (transformers
masking_utils `sliding_window_overlay`: key j is seen by query i iff i - W < j <= i).  Blocks wholly outside every
row's window are neither candidates nor always-kept (sink blocks there are dropped); inside boundary blocks the
window is an element mask, in the exact pass, the estimate (a pooled row uses its first row's window, the widest) and the
attention alike.  SALE's own `window` (the always-kept recent band) is a different thing.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

TAU_DENSE = 1e-4  # a head whose calibrated τ is at or below this runs dense (the paper's rule)


class QKQuant(NamedTuple):
    q_pack: Tensor  # int8 [B, H, S, D/2]: two int4 per byte (dim c low nibble, dim c + D/2 high nibble)
    q_scale: Tensor  # fp32 [B, H, S]
    q_bias: Tensor  # fp32 [B, H, S]: q_i · k̄ (raw score units)
    k_pack: Tensor  # int8 [B, Hkv, S, D/2]
    k_scale: Tensor  # fp32 [B, Hkv, S]
    k_bias: Tensor  # fp32 [B, H, S]: q̄_h · k̃_j


def round_half_even(x: Tensor) -> Tensor:
    return torch.round(x)  # torch.round is round-half-to-even, like the kernel's (x + 1.5·2^23) − 1.5·2^23


def quantize_int4_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int4 per row of the last dim: (int8 values in [-7, 7], fp32 scale = absmax / 7)."""
    x = x.float()
    scale = x.abs().amax(-1) / 7.0
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    xi = round_half_even(x * inv[..., None]).clamp(-7, 7).to(torch.int8)
    return xi, scale


def pack_int4_halves(xi: Tensor) -> Tensor:
    """int8 int4 values [..., D] -> int8 [..., D/2]: dim c in the low nibble, dim c + D/2 in the high one."""
    d2 = xi.shape[-1] // 2
    lo, hi = xi[..., :d2].to(torch.int32) & 0xF, xi[..., d2:].to(torch.int32) & 0xF
    p = lo | (hi << 4)
    return torch.where(p > 127, p - 256, p).to(torch.int8)


def unpack_int4_halves(p: Tensor) -> Tensor:
    p = p.to(torch.int32)
    lo = ((p << 28) >> 28)  # sign-extend the low nibble
    hi = p >> 4  # arithmetic shift keeps the high nibble's sign
    return torch.cat([lo, hi], -1).to(torch.int8)


def sale_quantize_ref(q: Tensor, k: Tensor) -> QKQuant:
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    qf, kf = q.float(), k.float()
    q_mean = qf.mean(2, keepdim=True)  # [B, H, 1, D]
    k_mean = kf.mean(2, keepdim=True)  # [B, Hkv, 1, D]
    qi, qs = quantize_int4_rows(qf - q_mean)
    kc = kf - k_mean
    ki, ks = quantize_int4_rows(kc)
    q_bias = (qf * k_mean.repeat_interleave(G, 1)).sum(-1)  # q_i · k̄
    k_bias = torch.einsum("bhd,bhsd->bhs", q_mean[:, :, 0], kc.repeat_interleave(G, 1))  # q̄ · k̃_j
    return QKQuant(pack_int4_halves(qi), qs, q_bias, pack_int4_halves(ki), ks, k_bias)


def pool_rows(x: Tensor, pool: int) -> Tensor:
    """Means of `pool` consecutive rows (dim -2) [..., S, D] -> [..., ceil(S/pool), D] fp32; a short last group
    averages its valid rows."""
    S = x.shape[-2]
    SP = -(-S // pool)
    xf = torch.nn.functional.pad(x.float(), (0, 0, 0, SP * pool - S))
    cnt = torch.full((SP,), float(pool), device=x.device)
    cnt[-1] = S - (SP - 1) * pool
    return xf.reshape(*x.shape[:-2], SP, pool, x.shape[-1]).sum(-2) / cnt[:, None]


def pool_min(t: Tensor, pool: int) -> Tensor:
    """Min over `pool` consecutive entries of the last dim [..., S] -> [..., ceil(S/pool)] (short last group)."""
    S = t.shape[-1]
    SP = -(-S // pool)
    return torch.nn.functional.pad(t, (0, SP * pool - S), value=float("inf")).reshape(*t.shape[:-1], SP, pool).amin(-1)


def quantize_pooled_q(q: Tensor, pool: int) -> tuple[Tensor, Tensor]:
    """The pooled estimate's query side: mean-pooled rows minus the sequence mean q̄, symmetric int4 per pooled
    row: (int8 values [B, H, ceil(S/pool), D], fp32 scale [B, H, ceil(S/pool)])."""
    return quantize_int4_rows(pool_rows(q, pool) - q.float().mean(2, keepdim=True))


def check_pool(pool: int, block_m: int) -> None:
    if not (isinstance(pool, int) and pool >= 1 and pool & (pool - 1) == 0 and block_m % pool == 0):
        raise ValueError(f"pool must be a power of two dividing block_m ({block_m}), got {pool!r}")


def visible(ri: Tensor, cj: Tensor, model_window: int | None = None) -> Tensor:
    """Elements (query i, key j) the model attends: causal, and inside its sliding window when it has one."""
    ok = cj <= ri
    return ok if model_window is None else ok & (ri - cj < model_window)


def check_model_window(model_window) -> None:
    if model_window is not None and not (isinstance(model_window, int) and model_window >= 1):
        raise ValueError(f"model_window must be None (full causal) or an int >= 1, got {model_window!r}")


def block_layout(S: int, block_m: int, block_n: int, sink: int, window: int, model_window: int | None = None):
    """(n_q_blocks, n_k_blocks, causal [nQB, nKB] bool, always [nQB, nKB] bool); `causal`: the blocks holding a
    key some row of the query block attends (inside `model_window` when given)."""
    check_model_window(model_window)
    nqb, nkb = -(-S // block_m), -(-S // block_n)
    qb = torch.arange(nqb)[:, None]
    kb = torch.arange(nkb)[None, :]
    causal = kb * block_n <= torch.clamp(qb * block_m + block_m - 1, max=S - 1)
    if model_window is not None:  # the block's last key is inside the first row's window
        causal = causal & (kb * block_n + block_n - 1 > qb * block_m - model_window)
    n_sink = -(-sink // block_n)
    local_lo = torch.clamp(qb * block_m - window, min=0) // block_n
    always = causal & ((kb < n_sink) | (kb >= local_lo))
    return nqb, nkb, causal, always


def sale_estimate_ref(quant: QKQuant, rows: slice, keys: int) -> Tensor:
    """The low-bit estimate S̃ [B, H, len(rows), keys] (raw score units; int products exact in fp32)."""
    H = quant.q_pack.shape[1]
    G = H // quant.k_pack.shape[1]
    qi = unpack_int4_halves(quant.q_pack[:, :, rows]).float()
    ki = unpack_int4_halves(quant.k_pack[:, :, :keys]).float().repeat_interleave(G, 1)
    s = qi @ ki.transpose(-1, -2)  # |Σ| ≤ 49·D: exact in fp32
    s = s * quant.q_scale[:, :, rows, None] * quant.k_scale.repeat_interleave(G, 1)[:, :, None, :keys]
    return s + quant.q_bias[:, :, rows, None] + quant.k_bias[:, :, None, :keys]


def _expand_blocks(m: Tensor, block_m: int, block_n: int, rows: slice, keys: int) -> Tensor:
    e = m.repeat_interleave(block_m, -2).repeat_interleave(block_n, -1)
    return e[..., rows, :keys]


def sale_block_scores_ref(q: Tensor, k: Tensor, scale: float, block_m: int = 64, block_n: int = 64,
                          sink: int = 64, window: int = 256, quant: QKQuant | None = None,
                          exact: bool = False, chunk_rows: int = 1024, pool: int = 1,
                          model_window: int | None = None) -> Tensor:
    """R [B, H, nQB, nKB] fp32: +inf for always-kept blocks, -inf for non-causal ones, else the block's max log
    relative attention score from the int4 estimate (`exact=True`: from the exact scores, the upper bound).
    `pool` > 1: the coarse estimate (`pool` consecutive query rows mean-pooled, each pooled row compared with the
    lowest threshold m_i + ln l_i − scale·q_bias_i of its rows; see `sale_block_scores_pooled_ref`).
    `model_window`: the model's sliding window (module docstring)."""
    B, H, S, D = q.shape
    G = H // k.shape[1]
    nqb, nkb, causal, always = block_layout(S, block_m, block_n, sink, window, model_window)
    if pool > 1:
        check_pool(pool, block_m)
        assert not exact, "exact scores have no pooled form"
        qpi, qps = quantize_pooled_q(q, pool)
        qpi = qpi.float() * qps[..., None]
    if quant is None and not exact:
        quant = sale_quantize_ref(q, k)
    if pool > 1:
        kiq = (unpack_int4_halves(quant.k_pack).float() * quant.k_scale[..., None]).repeat_interleave(G, 1)
    R = torch.full((B, H, nqb, nkb), float("-inf"))
    R[..., always] = float("inf")
    rows_per = max(1, chunk_rows // block_m) * block_m
    for r0 in range(0, S, rows_per):
        r1 = min(S, r0 + rows_per)
        rows = slice(r0, r1)
        qb0, qb1 = r0 // block_m, -(-r1 // block_m)
        s = (q[:, :, rows].float() @ k[:, :, :r1].float().repeat_interleave(G, 1).transpose(-1, -2)) * scale
        ri = torch.arange(r0, r1)[:, None]
        cj = torch.arange(r1)[None, :]
        alw = _expand_blocks(always[qb0:qb1], block_m, block_n, slice(r0 - qb0 * block_m, r1 - qb0 * block_m), r1)
        vis = visible(ri, cj, model_window)
        alw = alw & vis
        sa = s.masked_fill(~alw, float("-inf"))
        m = sa.amax(-1, keepdim=True)
        l = torch.exp(sa - m).sum(-1, keepdim=True)
        if pool > 1:  # r0 is a multiple of block_m, so of pool: pooled rows [r0/pool, ceil(r1/pool))
            thr = pool_min((m + torch.log(l))[..., 0] - scale * quant.q_bias[:, :, rows], pool)
            p0 = r0 // pool
            est = (qpi[:, :, p0:p0 + thr.shape[-1]] @ kiq[:, :, :r1].transpose(-1, -2)
                   + quant.k_bias[:, :, None, :r1]) * scale
            rel = est - thr[..., None]  # [B, H, pooled rows, keys]; only blocks left of the window are read
            if model_window is not None:  # a pooled row sees the keys its first row sees
                first = torch.arange(p0, p0 + thr.shape[-1]) * pool
                rel = rel.masked_fill(first[:, None] - cj >= model_window, float("-inf"))
            mp = block_m // pool
            rel = torch.nn.functional.pad(rel, (0, -(-r1 // block_n) * block_n - r1, 0,
                                                (qb1 - qb0) * mp - rel.shape[-2]), value=float("-inf"))
            bm = rel.reshape(B, H, qb1 - qb0, mp, -(-r1 // block_n), block_n).amax((3, 5))
        else:
            est = s if exact else sale_estimate_ref(quant, rows, r1) * scale
            rel = est - m - torch.log(l)  # [B, H, rows, keys]
            rel = rel.masked_fill(alw | ~vis, float("-inf"))
            # block max: pad rows/keys to whole blocks
            nr = (qb1 - qb0) * block_m
            pad_r = nr - (r1 - r0) - (r0 - qb0 * block_m)
            rel = torch.nn.functional.pad(rel, (0, -(-r1 // block_n) * block_n - r1, r0 - qb0 * block_m, pad_r),
                                          value=float("-inf"))
            bm = rel.reshape(B, H, qb1 - qb0, block_m, -(-r1 // block_n), block_n).amax((3, 5))
        cur = R[:, :, qb0:qb1, : bm.shape[-1]]
        est_blocks = causal[qb0:qb1, : bm.shape[-1]] & ~always[qb0:qb1, : bm.shape[-1]]
        R[:, :, qb0:qb1, : bm.shape[-1]] = torch.where(est_blocks, bm, cur)
    return R


def mask_from_scores(R: Tensor, tau: Tensor, tau_dense: float = TAU_DENSE) -> Tensor:
    """Block mask [B, H, nQB, nKB] bool: R > ln τ_h; dense heads keep every causal block."""
    tau = tau.float().reshape(1, -1, 1, 1)
    thr = torch.where(tau <= tau_dense, torch.full_like(tau, float("-inf")), torch.log(tau.clamp_min(1e-30)))
    return (R > thr) | ((R > float("-inf")) & (tau <= tau_dense))


def group_union(mask: Tensor, hkv: int) -> Tensor:
    """Per-head block mask [B, H, ...] -> one map per KV group (the OR of its H/hkv query heads), per head."""
    B, H = mask.shape[:2]
    G = H // hkv
    return mask.reshape(B, hkv, G, *mask.shape[2:]).any(2, keepdim=True).expand(B, hkv, G, *mask.shape[2:]) \
        .reshape(mask.shape)


def sale_select_ref(q: Tensor, k: Tensor, tau: Tensor, scale: float, block_m: int = 64, block_n: int = 64,
                    sink: int = 64, window: int = 256, tau_dense: float = TAU_DENSE, group: bool = False,
                    pool: int = 1, model_window: int | None = None) -> Tensor:
    """Block mask [B, H, nQB, nKB] bool of the blocks SALE keeps (the estimate + select step); group=True: the
    union over each KV group's query heads (what the GPU kernel computes by default); pool > 1: the coarse
    estimate from mean-pooled query rows; model_window: the model's sliding window."""
    m = mask_from_scores(sale_block_scores_ref(q, k, scale, block_m, block_n, sink, window, pool=pool,
                                               model_window=model_window), tau, tau_dense)
    return group_union(m, k.shape[1]) if group else m


def sale_attention_ref(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, block_m: int = 64,
                       block_n: int = 64, chunk_rows: int = 1024, model_window: int | None = None) -> Tensor:
    """Causal softmax attention over the kept blocks of `mask` [B, H, nQB, nKB] (and inside `model_window`, the
    model's sliding window, when given); GQA by head index."""
    B, H, S, D = q.shape
    G = H // k.shape[1]
    out = torch.empty(B, H, S, v.shape[-1], dtype=torch.float32)
    rows_per = max(1, chunk_rows // block_m) * block_m
    for r0 in range(0, S, rows_per):
        r1 = min(S, r0 + rows_per)
        qb0, qb1 = r0 // block_m, -(-r1 // block_m)
        kk = k[:, :, :r1].float().repeat_interleave(G, 1)
        vv = v[:, :, :r1].float().repeat_interleave(G, 1)
        s = (q[:, :, r0:r1].float() @ kk.transpose(-1, -2)) * scale
        keep = _expand_blocks(mask[:, :, qb0:qb1].bool(), block_m, block_n, slice(r0 - qb0 * block_m, r1 - qb0 * block_m), r1)
        keep = keep & visible(torch.arange(r0, r1)[:, None], torch.arange(r1)[None, :], model_window)
        p = torch.softmax(s.masked_fill(~keep, float("-inf")), -1)
        out[:, :, r0:r1] = p @ vv
    return out.to(q.dtype)


def sale_attention_full_ref(q, k, v, tau, scale, block_m=64, block_n=64, sink=64, window=256,
                            tau_dense=TAU_DENSE, group=False, pool=1, model_window=None):
    mask = sale_select_ref(q, k, tau, scale, block_m, block_n, sink, window, tau_dense, group, pool, model_window)
    return sale_attention_ref(q, k, v, mask, scale, block_m, block_n, model_window=model_window)


def causal_block_count(S: int, block_m: int, block_n: int, model_window: int | None = None) -> int:
    return int(block_layout(S, block_m, block_n, 0, 0, model_window)[2].sum())


def default_scale(d: int) -> float:
    return 1.0 / math.sqrt(d)


def mask_to_index(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Block mask [..., nQB, nKB] -> (kv_idx int32 [..., nQB, nKB], ascending kept blocks first; kv_cnt)."""
    nkb = mask.shape[-1]
    ar = torch.arange(nkb, dtype=torch.int32, device=mask.device).expand_as(mask)
    key = torch.where(mask.bool(), ar, ar + nkb)  # kept blocks sort first, in order
    idx = torch.sort(key, -1).values
    idx = torch.where(idx >= nkb, torch.zeros_like(idx), idx)
    return idx.to(torch.int32), mask.bool().sum(-1).to(torch.int32)


def sale_attention_chunked_ref(q: Tensor, k: Tensor, v: Tensor, tau: Tensor, scale: float, block_m: int = 64,
                               block_n: int = 64, sink: int = 64, window: int = 256, tau_dense: float = TAU_DENSE,
                               chunk_rows: int = 1024, pool: int = 1,
                               model_window: int | None = None) -> tuple[Tensor, Tensor]:
    """(out, mask): select + sparse attention in one chunked pass (the CPU evaluation path; same decisions as
    `sale_select_ref` up to fp32 rounding — the scales and biases are folded into one augmented product
    rel = [qs·q̃int·scale, scale·q_bias − m − ln l, 1] · [ks·k̃int, 1, scale·k_bias]).  pool > 1: the rows of
    the product are the mean-pooled query rows, the middle column max_i∈pool (scale·q_bias_i − m_i − ln l_i).
    model_window: the model's sliding window (module docstring)."""
    B, H, S, D = q.shape
    G = H // k.shape[1]
    nqb, nkb, causal, always = block_layout(S, block_m, block_n, sink, window, model_window)
    quant = sale_quantize_ref(q, k)
    if pool > 1:
        check_pool(pool, block_m)
        qpi, qps = quantize_pooled_q(q, pool)
        qi = qpi.float() * (qps * scale)[..., None]
    else:
        qi = unpack_int4_halves(quant.q_pack).float() * (quant.q_scale * scale)[..., None]
    ki = (unpack_int4_halves(quant.k_pack).float() * quant.k_scale[..., None]).repeat_interleave(G, 1)
    ones_k = torch.ones(B, H, S, 1)
    k_aug = torch.cat([ki, ones_k, (quant.k_bias * scale)[..., None]], -1)
    kk = k.float().repeat_interleave(G, 1)
    vv = v.float().repeat_interleave(G, 1)
    tau = tau.float().reshape(1, -1, 1, 1)
    dense_head = tau <= tau_dense
    log_tau = torch.log(tau.clamp_min(1e-30))
    out = torch.empty(B, H, S, v.shape[-1])
    mask = torch.zeros(B, H, nqb, nkb, dtype=torch.bool)
    rows_per = max(1, chunk_rows // block_m) * block_m
    for r0 in range(0, S, rows_per):
        r1 = min(S, r0 + rows_per)
        qb0, qb1 = r0 // block_m, -(-r1 // block_m)
        nk = -(-r1 // block_n)
        ri, cj = torch.arange(r0, r1)[:, None], torch.arange(r1)[None, :]
        caus2 = visible(ri, cj, model_window)
        alw2 = _expand_blocks(always[qb0:qb1], block_m, block_n, slice(0, r1 - r0), r1) & caus2
        s = (q[:, :, r0:r1].float() @ kk[:, :, :r1].transpose(-1, -2)) * scale
        sa = s.masked_fill(~alw2, float("-inf"))
        m = sa.amax(-1, keepdim=True)
        l = torch.exp(sa.sub_(m)).sum(-1, keepdim=True)
        del sa
        mid = quant.q_bias[:, :, r0:r1, None] * scale - m - torch.log(l)
        if pool > 1:  # blocks estimated lie left of the query block: no causal / always element inside
            mid = -pool_min(-mid[..., 0], pool)[..., None]
            p0 = r0 // pool
            q_aug = torch.cat([qi[:, :, p0:p0 + mid.shape[-2]], mid, torch.ones(B, H, mid.shape[-2], 1)], -1)
            rel = q_aug @ k_aug[:, :, :r1].transpose(-1, -2)
            if model_window is not None:  # a pooled row sees the keys its first row sees
                first = torch.arange(p0, p0 + mid.shape[-2]) * pool
                rel.masked_fill_(first[:, None] - cj >= model_window, float("-inf"))
            mp = block_m // pool
        else:
            q_aug = torch.cat([qi[:, :, r0:r1], mid, torch.ones(B, H, r1 - r0, 1)], -1)
            rel = q_aug @ k_aug[:, :, :r1].transpose(-1, -2)
            rel.masked_fill_(alw2 | ~caus2, float("-inf"))
            mp = block_m
        rel = torch.nn.functional.pad(rel, (0, nk * block_n - r1, 0, (qb1 - qb0) * mp - rel.shape[-2]),
                                      value=float("-inf"))
        bmax = rel.reshape(B, H, qb1 - qb0, mp, nk, block_n).amax((3, 5))
        del rel
        cb, ab = causal[qb0:qb1, :nk], always[qb0:qb1, :nk]
        keep = ab | (cb & ((bmax > log_tau) | dense_head))
        mask[:, :, qb0:qb1, :nk] = keep
        keep2 = _expand_blocks(keep, block_m, block_n, slice(0, r1 - r0), r1) & caus2
        s.masked_fill_(~keep2, float("-inf"))
        out[:, :, r0:r1] = torch.softmax(s, -1) @ vv[:, :, :r1]
    return out.to(q.dtype), mask


def sale_block_scores_pooled_ref(q: Tensor, k: Tensor, scale: float, block_m: int, block_n: int, sink: int,
                                 window: int, pool: int, model_window: int | None = None) -> Tensor:
    """The coarse option (`pool` > 1, small shapes: full S×S): R [B, H, nQB, nKB] like `sale_block_scores_ref`
    but from mean-pooled query rows (pool consecutive rows, mean-subtracted int4, per pooled-row scale), each
    pooled row compared with the lowest threshold m_i + ln l_i − scale·q_bias_i of its rows."""
    B, H, S, D = q.shape
    G = H // k.shape[1]
    nqb, nkb, causal, always = block_layout(S, block_m, block_n, sink, window, model_window)
    quant = sale_quantize_ref(q, k)
    SP = -(-S // pool)
    qf = torch.nn.functional.pad(q.float(), (0, 0, 0, SP * pool - S))
    cnt = torch.full((SP,), float(pool))
    cnt[-1] = S - (SP - 1) * pool
    qp = qf.reshape(B, H, SP, pool, D).sum(3) / cnt[:, None]
    qpi, qps = quantize_int4_rows(qp - q.float().mean(2, keepdim=True))
    ki = unpack_int4_halves(quant.k_pack).float().repeat_interleave(G, 1)
    est = (qpi.float() @ ki.transpose(-1, -2)) * qps[..., None] * quant.k_scale.repeat_interleave(G, 1)[:, :, None]
    est = (est + quant.k_bias[:, :, None]) * scale  # [B, H, SP, S]
    s = (q.float() @ k.float().repeat_interleave(G, 1).transpose(-1, -2)) * scale
    ri, cj = torch.arange(S)[:, None], torch.arange(S)[None, :]
    alw = _expand_blocks(always, block_m, block_n, slice(0, S), S) & visible(ri, cj, model_window)
    sa = s.masked_fill(~alw, float("-inf"))
    m = sa.amax(-1)
    lse = m + torch.log(torch.exp(sa - m[..., None]).sum(-1))
    thr = lse - scale * quant.q_bias  # [B, H, S]
    thr = torch.nn.functional.pad(thr, (0, SP * pool - S), value=float("inf")).reshape(B, H, SP, pool).amin(-1)
    rel = est - thr[..., None]
    if model_window is not None:  # a pooled row sees the keys its first row sees
        first = torch.arange(SP) * pool
        rel = rel.masked_fill(first[:, None] - cj >= model_window, float("-inf"))
    rel = torch.nn.functional.pad(rel, (0, nkb * block_n - S, 0, nqb * (block_m // pool) - SP), value=float("-inf"))
    bm = rel.reshape(B, H, nqb, block_m // pool, nkb, block_n).amax((3, 5))
    R = torch.full((B, H, nqb, nkb), float("-inf"))
    R[..., always] = float("inf")
    mid = causal & ~always
    R[..., mid] = bm[..., mid]
    return R
