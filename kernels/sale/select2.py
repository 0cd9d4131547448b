"""SALE estimate + select, v2 (`_sale_select2_kernel`, same decisions as v1): QB query blocks per program sharing
each key tile, keys pre-unpacked to [S, D] fp8 by the quantize kernel, heaviest blocks first.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .select import _row_thresholds, window_limits


def select2_config(rows, split=False, launch=None):
    """Launch config of select v2: 8 warps at every tile size (ptxas -v for sm_90a, D 128, 128x64 blocks: 4 warps
    spill 0.5-1 KB per thread at 255 registers; 8 warps use ~245 registers with no spill for P = 8 / 16);
    `launch` (num_warps, num_stages) overrides."""
    if launch:
        return dict(launch)
    return dict(num_warps=8, num_stages=2)  # split too (P 16 QB 4: 164 registers, QB 1: 128; 4 warps spill)


def select2_blocks(gs, block_m, pool, qb=None):
    """(QB query blocks per program, RQ estimate rows per query block) of select v2: by default (qb None) as many
    blocks as fit 128 stacked rows, at most 16 (KV-group selection, 128-row blocks: P 16 -> QB 4, P 8 -> 2; per
    head: P 16 -> 16, P 8 -> 8; full resolution: 1).  H100, 64K, group, P 16: QB 4 5.6 ms, QB 8 6.2, QB 2 10.8;
    P 8: QB 2 8.5, QB 4 9.2 ms; per head with QB 4 (P 16): 11.1 ms."""
    rows = gs * block_m // pool
    if not qb:
        qb = max(1, min(16, 128 // rows))
    return qb, max(rows, 16 // qb)


@triton.jit
def _sale_select2_kernel(q_ptr, k_ptr, qp_ptr, qs_ptr, qb_ptr, kx_ptr, ks_ptr, kb_ptr, tau_ptr, thr_ptr,
                         idx_ptr, cnt_ptr, mask_ptr,
                         S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, qk_scale, tau_dense,
                         N_SINK, WINDOW, MWIN,
                         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GS: tl.constexpr,
                         POOL: tl.constexpr, QB: tl.constexpr, RQ: tl.constexpr, KB: tl.constexpr,
                         F8: tl.constexpr, BIAS_MMA: tl.constexpr = False, SPLIT: tl.constexpr = False):
    """v2 of `_sale_select_kernel` (same decisions): one program per (QB consecutive query blocks, group of GS
    heads), heaviest (last) query blocks first.  The estimate tile stacks the QB blocks' (pooled) rows of the GS
    heads — rows r = qi·RQ + g·MP + p (RQ ≥ GS·MP rows per block, padding rows never keep) — so each key tile is
    loaded once for all of them; the keys come pre-unpacked ([S, D] fp8 e4m3 / int8 from the quantize kernel):
    one dot with K = D and no in-loop unpack.  Per query block: its own causal / window limits (a mask over the
    [QB, KB] decisions), its own index list and count.  BIAS_MMA (GS > 1): the per-head key bias is added by a
    small fp16 MMA (a loop-invariant one-hot [rows, 32] × the GS heads' biases split hi + lo into fp16, [32, keys],
    accumulating onto the scaled estimate) instead of GS selects per score; the split keeps ~22 bits of the bias,
    so decisions can differ from v1 only at near-exact ties.  SPLIT: the thresholds come precomputed in thr_ptr
    (`_sale_thr_kernel`, one program per (query block, head)); this kernel runs the estimate only (fewer live
    registers).  MWIN: the model's sliding window (select.py `window_limits`)."""
    pid = tl.program_id(0)
    bg = tl.program_id(1)
    NQB = tl.cdiv(S, BLOCK_M)
    NP = tl.cdiv(NQB, QB)
    qblk0 = (NP - 1 - pid) * QB  # heaviest first
    NG = H // GS
    b = bg // NG
    h0 = (bg % NG) * GS
    kvh = h0 // G
    Hkv = H // G
    kvbh = b * Hkv + kvh
    NKB = tl.cdiv(S, BLOCK_N)
    D2: tl.constexpr = D // 2
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    k_base = k_ptr + b * sk_b + kvh * sk_h

    # per query block limits, as vectors over the QB blocks
    qv = qblk0 + tl.arange(0, QB)
    qvalid = qv < NQB
    last_v, wlo_v, shi_v, lo_v, wfull_v = window_limits(qv, S, N_SINK, WINDOW, MWIN, BLOCK_M, BLOCK_N)
    out_v = bg * NQB + qv
    idx_v = idx_ptr + out_v * NKB
    mask_v = mask_ptr + out_v * NKB

    # ---- exact pass per (query block, head), as in v1; thresholds to the scratch thr_ptr
    n_sparse = N_SINK * 0
    if SPLIT:
        for g in range(0, GS):
            n_sparse += (tl.load(tau_ptr + h0 + g) > tau_dense).to(tl.int32)
    for qi in range(0, 0 if SPLIT else QB):
        qblk = qblk0 + qi
        rows = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < S
        last, w_lo, sink_hi, local_lo, w_full = window_limits(qblk, S, N_SINK, WINDOW, MWIN, BLOCK_M, BLOCK_N)
        n_sink = sink_hi - w_lo
        n_exact = tl.where(qblk < NQB, n_sink + (last + 1 - local_lo), 0)
        for g in range(0, GS):
            h = h0 + g
            bh = b * H + h
            thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, w_lo, n_sink,
                                       local_lo, n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, MWIN,
                                       D, BLOCK_M, BLOCK_N)
            tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)
            n_sparse += (tau > tau_dense).to(tl.int32)
    tl.debug_barrier()

    cnt_v = tl.zeros([QB], tl.int32)
    # sink blocks [wlo_v, shi_v) per query block (inside the model window)
    for t in range(tl.min(tl.where(qvalid, wlo_v, N_SINK), 0), N_SINK):
        st = qvalid & (t >= wlo_v) & (t < shi_v)
        tl.store(idx_v + cnt_v, t, mask=st)
        tl.store(mask_v + t, 1, mask=st)
        cnt_v += st.to(tl.int32)
    hi = tl.max(tl.where(qvalid, lo_v, 0), 0)  # estimated key blocks: [shi_v, lo_v) per query block
    est_lo = tl.min(tl.where(qvalid, shi_v, hi), 0)
    w_full = tl.max(tl.where(qvalid, wfull_v, 0), 0)  # key blocks below need the window's element mask
    if n_sparse == 0:
        for kb in range(est_lo, hi):
            st = qvalid & (kb >= shi_v) & (kb < lo_v)
            tl.store(idx_v + cnt_v, kb, mask=st)
            tl.store(mask_v + kb, 1, mask=st)
            cnt_v += st.to(tl.int32)
    else:
        MP: tl.constexpr = BLOCK_M // POOL
        PR: tl.constexpr = QB * RQ
        r = tl.arange(0, PR)
        rr = r % RQ
        grow = rr // MP
        prow = (qblk0 + r // RQ) * MP + (rr % MP)  # pooled row index
        SP = tl.cdiv(S, POOL)
        smask = (prow < SP) & (rr < GS * MP)
        sbh = b * H + h0 + grow
        if POOL == 1:
            thr = tl.load(thr_ptr + sbh * S + prow, mask=smask, other=float("inf"))
        else:
            pr = prow[:, None] * POOL + tl.arange(0, POOL)[None, :]
            thr = tl.min(tl.load(thr_ptr + sbh[:, None] * S + pr, mask=(pr < S) & smask[:, None],
                                 other=float("inf")), 1)
        # query operand [PR, D] in dim order from the packed rows: dim c is byte c % D2, nibble c // D2
        qp = tl.load(qp_ptr + sbh[:, None] * SP * D2 + prow[:, None] * D2 + (dcols % D2)[None, :],
                     mask=smask[:, None], other=0)
        qx = tl.where((dcols < D2)[None, :], (qp << 4) >> 4, qp >> 4)
        if F8:
            qx = qx.to(tl.float16).to(tl.float8e4nv)
        qsc = tl.load(qs_ptr + sbh * SP + prow, mask=smask, other=0.0) * qk_scale
        first = prow * POOL  # a pooled row sees the keys its first (widest-window) row sees
        KN: tl.constexpr = KB * BLOCK_N
        kcols = tl.arange(0, KN)
        sub = tl.arange(0, KB)
        hc = tl.arange(0, 32)  # BIAS_MMA: columns c < 16 pick head c's hi part, 16 + c its lo part
        onehot = ((hc[None, :] % 16) == grow[:, None]).to(tl.float16)
        hvalid = (hc % 16) < GS
        for kb0 in range(est_lo, hi, KB):
            keys = kb0 * BLOCK_N + kcols
            kvalid = keys < hi * BLOCK_N
            kl = tl.minimum(keys, hi * BLOCK_N - 1)  # unmasked load (clamped rows; blocks ≥ hi are never kept)
            kx = tl.load(kx_ptr + kvbh * S * D + kl[:, None] * D + dcols[None, :])
            if F8:
                acc = tl.dot(qx, tl.trans(kx), out_dtype=tl.float32)
            else:
                acc = tl.dot(qx, tl.trans(kx), out_dtype=tl.int32).to(tl.float32)
            ksc = tl.load(ks_ptr + kvbh * S + keys, mask=kvalid, other=0.0)
            if GS == 1:
                kbi = tl.load(kb_ptr + (b * H + h0) * S + keys, mask=kvalid, other=0.0) * qk_scale
                est = acc * qsc[:, None] * ksc[None, :] + kbi[None, :]
            elif BIAS_MMA:
                kbm = tl.load(kb_ptr + (b * H + h0 + hc % 16)[:, None] * S + keys[None, :],
                              mask=hvalid[:, None] & kvalid[None, :], other=0.0) * qk_scale  # [32, KN]
                b_hi = kbm.to(tl.float16)
                b_lo = (kbm - b_hi.to(tl.float32)).to(tl.float16)
                kbm16 = tl.where((hc < 16)[:, None], b_hi, b_lo)
                est = tl.dot(onehot, kbm16, acc * qsc[:, None] * ksc[None, :], out_dtype=tl.float32)
            else:
                bias = tl.zeros([PR, KN], tl.float32)
                for gg in tl.static_range(GS):
                    kbi = tl.load(kb_ptr + (b * H + h0 + gg) * S + keys, mask=kvalid, other=0.0) * qk_scale
                    bias = tl.where(grow[:, None] == gg, kbi[None, :], bias)
                est = acc * qsc[:, None] * ksc[None, :] + bias
            if kb0 < w_full:  # at the model window's edge: elements outside it never count
                est = tl.where(first[:, None] - keys[None, :] < MWIN, est, -float("inf"))
            if KB == 1:
                hq = tl.max(tl.reshape(tl.max(est, 1) - thr, [QB, RQ]), 1)  # [QB]
                cand = qvalid & (kb0 >= shi_v) & (kb0 < lo_v)
                st = (hq > 0) & cand
                tl.store(idx_v + cnt_v, kb0, mask=st)
                tl.store(mask_v + kb0, st.to(tl.int8), mask=cand)
                cnt_v += st.to(tl.int32)
            else:
                rmax = tl.max(tl.reshape(est, [PR, KB, BLOCK_N]), 2) - thr[:, None]  # [PR, KB]
                hq = tl.max(tl.reshape(rmax, [QB, RQ, KB]), 1)  # [QB, KB]
                kbs = kb0 + sub
                valid = qvalid[:, None] & (kbs[None, :] >= shi_v[:, None]) & (kbs[None, :] < lo_v[:, None])
                hit = ((hq > 0) & valid).to(tl.int32)
                pos = cnt_v[:, None] + tl.cumsum(hit, 1) - hit
                tl.store(idx_v[:, None] + pos, kbs[None, :] + 0 * pos, mask=hit > 0)
                tl.store(mask_v[:, None] + kbs[None, :], hit.to(tl.int8), mask=valid)
                cnt_v += tl.sum(hit, 1)
    lo_min = tl.min(tl.where(qvalid, lo_v, NKB), 0)
    last_max = tl.max(tl.where(qvalid, last_v, -1), 0)
    for kb in range(lo_min, last_max + 1):  # local window + diagonal
        st = qvalid & (kb >= lo_v) & (kb <= last_v)
        tl.store(idx_v + cnt_v, kb, mask=st)
        tl.store(mask_v + kb, 1, mask=st)
        cnt_v += st.to(tl.int32)
    tl.store(cnt_ptr + out_v, cnt_v, mask=qvalid)

