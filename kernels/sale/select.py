"""SALE estimate + select, v1 (`_sale_select_kernel`) and the exact pass shared by both versions.

`_sale_select_kernel`: one program per (query block, head group).  Exact pass over the sink, local and diagonal
blocks (online max/sum, base 2), then the int4 estimate (two int8 `tl.dot`s over D/2 → int32: int8 MMA on Hopper)
over the other causal blocks; writes the kept key blocks as a compact ascending index list (kv_idx, kv_cnt) and a
block mask. `_sale_thr_kernel`: the exact pass as its own kernel (select v2 with split=True).

MWIN: the model's sliding window (key j seen by row i iff i - MWIN < j <= i; the launchers pass 2^30 for full
causal).  `window_limits` gives each query block's first key block inside some row's window (sink blocks below it
are dropped) and the first block wholly inside every row's window; blocks between get the element mask.
"""
from __future__ import annotations

import triton
import triton.language as tl

SELECT_CONFIG = dict(num_warps=4, num_stages=2)  # stacked rows (GS * BLOCK_M) <= 128
THR_CONFIG = dict(num_warps=8, num_stages=2)


def key_blocks(rows, block_n, kb=None):
    """Key blocks per estimate iteration (`kb` overrides: benchmarks/attention.py --sweep): up to 256 keys, at most
    32K int32 accumulators per tile."""
    if kb:
        return int(kb)
    return max(1, min(256 // block_n, 8192 // (rows * block_n)))  # measured: larger tiles spill (docs/sale.md)


def select_config(rows, launch=None):
    """Launch config of the select kernel by stacked query rows (GS * BLOCK_M); `launch` (num_warps, num_stages)
    overrides."""
    if launch:
        return dict(launch)
    return dict(num_warps=4, num_stages=2) if rows <= 128 else dict(num_warps=8, num_stages=3)


NO_WINDOW = 1 << 30  # MWIN for full causal attention


@triton.jit
def window_limits(qblk, S, N_SINK, WINDOW, MWIN, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One query block's key-block limits: (last causal block, first block inside the model window `w_lo`, end of
    the sink blocks [w_lo, sink_hi), first always-kept local block `local_lo`, first block needing no window
    element mask `w_full`).  Estimated blocks: [sink_hi, local_lo)."""
    last = tl.minimum((qblk * BLOCK_M + BLOCK_M - 1) // BLOCK_N, (S - 1) // BLOCK_N)
    w_lo = tl.maximum(qblk * BLOCK_M - MWIN + 1, 0) // BLOCK_N
    sink_hi = tl.maximum(tl.minimum(N_SINK, last + 1), w_lo)
    local_lo = tl.maximum(tl.maximum(qblk * BLOCK_M - WINDOW, 0) // BLOCK_N, sink_hi)
    i_max = qblk * BLOCK_M + BLOCK_M - 1
    w_full = tl.where(i_max >= MWIN, tl.maximum(i_max - MWIN, 0) // BLOCK_N + 1, 0)
    return last, w_lo, sink_hi, local_lo, w_full


@triton.jit
def _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, sink_lo, n_sink, local_lo, n_exact,
                    sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, MWIN,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The exact pass of every select kernel, for one head's query rows: online max / sum over the sink blocks
    [sink_lo, sink_lo + n_sink) and the local + diagonal blocks [local_lo, ...), inside the model window MWIN ->
    each row's keep threshold (base 2, q_bias folded in; -inf for a dense head), and the head's tau."""
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_s + dcols[None, :], mask=rmask[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for t in range(0, n_exact):
        kb = tl.where(t < n_sink, sink_lo + t, local_lo + t - n_sink)
        keys = kb * BLOCK_N + ncols
        kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :], mask=keys[:, None] < S, other=0.0)
        s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale
        seen = (keys[None, :] <= rows[:, None]) & (keys[None, :] < S) & (rows[:, None] - keys[None, :] < MWIN)
        s = tl.where(seen, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row with no key seen yet (window edge)
        l_i = l_i * tl.exp2(m_i - m_use) + tl.sum(tl.exp2(s - m_use[:, None]), 1)
        m_i = m_new
    tau = tl.load(tau_ptr + h)
    qbi = tl.load(qb_ptr + (b * H + h) * S + rows, mask=rmask, other=0.0) * qk_scale
    thr = m_i + tl.log2(tl.maximum(l_i, 1e-30)) + tl.log2(tl.maximum(tau, 1e-30)) - qbi
    thr = tl.where(tau <= tau_dense, -float("inf"), thr)
    return thr, tau


@triton.jit
def _sale_select_kernel(q_ptr, k_ptr, qp_ptr, qs_ptr, qb_ptr, kp_ptr, ks_ptr, kb_ptr, tau_ptr, thr_ptr,
                        idx_ptr, cnt_ptr, mask_ptr,
                        S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, qk_scale, tau_dense,
                        N_SINK, WINDOW, MWIN,
                        D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GS: tl.constexpr,
                        POOL: tl.constexpr, PR: tl.constexpr, KB: tl.constexpr, F8: tl.constexpr):
    """One program per (query block, group of GS query heads sharing a KV head; GS = 1: one head).  The GS
    heads' query rows are stacked into one [GS*BLOCK_M, D/2] int8 tile, so each key tile is loaded and unpacked
    once and the int8 dots run at GS*BLOCK_M rows.  A block is kept for the whole group iff some head keeps it
    (union of the per-head decisions); outputs are per group ([B, H/GS, ...]).  POOL > 1 (coarse option): qp /
    qs hold mean-pooled query rows (POOL consecutive rows each, S/POOL rows per head) and each pooled row is
    compared with the lowest threshold of its POOL rows.  PR = max(GS*BLOCK_M/POOL, 16): the estimate tile's
    rows (padded to the smallest dot; padding rows have threshold +inf, so they never keep a block)."""
    qblk = tl.program_id(0)
    bg = tl.program_id(1)
    NG = H // GS
    b = bg // NG
    h0 = (bg % NG) * GS
    kvh = h0 // G
    Hkv = H // G
    kvbh = b * Hkv + kvh
    NKB = tl.cdiv(S, BLOCK_N)
    NQB = tl.cdiv(S, BLOCK_M)
    D2: tl.constexpr = D // 2
    GM: tl.constexpr = GS * BLOCK_M
    rows = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < S
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    k_base = k_ptr + b * sk_b + kvh * sk_h

    last, w_lo, sink_hi, local_lo, w_full = window_limits(qblk, S, N_SINK, WINDOW, MWIN, BLOCK_M, BLOCK_N)
    n_sink = sink_hi - w_lo
    out_row = bg * NQB + qblk
    idx_base = idx_ptr + out_row * NKB
    mask_base = mask_ptr + out_row * NKB
    n_exact = n_sink + (last + 1 - local_lo)

    # ---- exact pass per head: sink blocks [0, n_sink) and local + diagonal blocks [local_lo, last];
    # each row's threshold (base 2, q_bias folded in; -inf for a dense head) goes to the scratch thr_ptr
    n_sparse = n_sink * 0
    for g in range(0, GS):
        h = h0 + g
        bh = b * H + h
        thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, w_lo, n_sink,
                                   local_lo, n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, MWIN,
                                   D, BLOCK_M, BLOCK_N)
        thr = tl.where(rmask, thr, float("inf"))
        tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)
        n_sparse += (tau > tau_dense).to(tl.int32)
    tl.debug_barrier()

    cnt = n_sink * 0
    for t in range(w_lo, sink_hi):
        tl.store(idx_base + cnt, t)
        tl.store(mask_base + t, 1)
        cnt += 1
    if n_sparse == 0:
        for kb in range(sink_hi, local_lo):
            tl.store(idx_base + cnt, kb)
            tl.store(mask_base + kb, 1)
            cnt += 1
    else:
        # keep iff some row of some head has est·qk_scale − m_i − log2(l_i) > log2(τ_h)
        MP: tl.constexpr = BLOCK_M // POOL
        GP: tl.constexpr = GM // POOL
        r = tl.arange(0, PR)
        grow = r // MP
        prow = qblk * MP + (r % MP)  # pooled row index
        SP = tl.cdiv(S, POOL)
        smask = (prow < SP) & (r < GP)
        sbh = b * H + h0 + grow
        if POOL == 1:
            thr = tl.load(thr_ptr + sbh * S + prow, mask=smask, other=float("inf"))
        else:
            pr = prow[:, None] * POOL + tl.arange(0, POOL)[None, :]
            thr = tl.min(tl.load(thr_ptr + sbh[:, None] * S + pr, mask=(pr < S) & smask[:, None],
                                 other=float("inf")), 1)
        srow = prow
        S_q = SP
        first = prow * POOL  # a pooled row sees the keys its first (widest-window) row sees
        c2 = tl.arange(0, D2)
        qp = tl.load(qp_ptr + sbh[:, None] * S_q * D2 + srow[:, None] * D2 + c2[None, :], mask=smask[:, None],
                     other=0)
        q_lo = (qp << 4) >> 4
        q_hi = qp >> 4
        if F8:  # int4 values are exact in e4m3 and the fp32 sums (|Σ| ≤ 49·D) are exact: same result as int8,
            q_lo = q_lo.to(tl.float16).to(tl.float8e4nv)  # with no int->float conversion per score element
            q_hi = q_hi.to(tl.float16).to(tl.float8e4nv)
        qsc = tl.load(qs_ptr + sbh * S_q + srow, mask=smask, other=0.0) * qk_scale
        KN: tl.constexpr = KB * BLOCK_N
        kcols = tl.arange(0, KN)
        sub = tl.arange(0, KB)
        for kb0 in range(sink_hi, local_lo, KB):  # KB key blocks per iteration, one decision per block
            keys = kb0 * BLOCK_N + kcols
            kvalid = keys < local_lo * BLOCK_N
            kp = tl.load(kp_ptr + kvbh * S * D2 + keys[:, None] * D2 + c2[None, :], mask=kvalid[:, None], other=0)
            k_lo = (kp << 4) >> 4
            k_hi = kp >> 4
            if F8:
                k_lo = k_lo.to(tl.float16).to(tl.float8e4nv)
                k_hi = k_hi.to(tl.float16).to(tl.float8e4nv)
                acc = tl.dot(q_lo, tl.trans(k_lo), out_dtype=tl.float32)
                acc = tl.dot(q_hi, tl.trans(k_hi), acc, out_dtype=tl.float32)
            else:
                acc_i = tl.dot(q_lo, tl.trans(k_lo), out_dtype=tl.int32)
                acc = tl.dot(q_hi, tl.trans(k_hi), acc_i, out_dtype=tl.int32).to(tl.float32)
            ksc = tl.load(ks_ptr + kvbh * S + keys, mask=kvalid, other=0.0)
            bias = tl.zeros([PR, KN], tl.float32)
            for gg in tl.static_range(GS):
                kbi = tl.load(kb_ptr + (b * H + h0 + gg) * S + keys, mask=kvalid, other=0.0) * qk_scale
                bias = tl.where(grow[:, None] == gg, kbi[None, :], bias)
            # the row threshold is subtracted after each row's max over the block (one subtraction per row, not per
            # score; exact: fl(x - t) is monotonic in x, so max_j fl(x_j - t) = fl(max_j x_j - t))
            est = acc * qsc[:, None] * ksc[None, :] + bias
            if kb0 < w_full:  # at the model window's edge: elements outside it never count
                est = tl.where(first[:, None] - keys[None, :] < MWIN, est, -float("inf"))
            if KB == 1:
                hit = (tl.max(tl.max(est, 1) - thr, 0) > 0).to(tl.int32)
                tl.store(idx_base + cnt, kb0)  # overwritten by the next kept block when this one is skipped
                tl.store(mask_base + kb0, hit.to(tl.int8))
                cnt += hit
            else:
                hmax = tl.max(tl.max(tl.reshape(est, [PR, KB, BLOCK_N]), 2) - thr[:, None], 0)  # [KB]
                kbs = kb0 + sub
                valid = kbs < local_lo
                hit = ((hmax > 0) & valid).to(tl.int32)
                pos = cnt + tl.cumsum(hit, 0) - hit
                tl.store(idx_base + pos, kbs, mask=hit > 0)
                tl.store(mask_base + kbs, hit.to(tl.int8), mask=valid)
                cnt += tl.sum(hit, 0)
    for kb in range(local_lo, last + 1):
        tl.store(idx_base + cnt, kb)
        tl.store(mask_base + kb, 1)
        cnt += 1
    tl.store(cnt_ptr + out_row, cnt)


@triton.jit
def _sale_thr_kernel(q_ptr, k_ptr, qb_ptr, tau_ptr, thr_ptr,
                     S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, qk_scale, tau_dense, N_SINK, WINDOW, MWIN,
                     D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The exact pass of the select kernels as its own kernel (select v2 SPLIT): one program per (query block,
    head): online max / sum over the sink, window and diagonal blocks → per-row threshold (base 2, q_bias folded
    in, −inf for a dense head) to thr [B*H, S]."""
    qblk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // G
    rows = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < S
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    k_base = k_ptr + b * sk_b + kvh * sk_h
    last, w_lo, sink_hi, local_lo, w_full = window_limits(qblk, S, N_SINK, WINDOW, MWIN, BLOCK_M, BLOCK_N)
    n_exact = (sink_hi - w_lo) + (last + 1 - local_lo)
    thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, w_lo, sink_hi - w_lo,
                               local_lo, n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, MWIN,
                               D, BLOCK_M, BLOCK_N)
    tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)

