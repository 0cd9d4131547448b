"""SALE Triton kernels: int4 Q/K quantization, estimate + select, block-sparse flash attention (forward).

Same math as `sale_reference.py` (read its docstring first).  Layout q [B, H, S, D], k / v [B, Hkv, S, D],
any strides on the last-but-one dims (the launchers pass them), GQA by head index (no repeat_kv copy).

* `_sale_quant_kernel`: one program per (BLOCK_R rows, head): mean-subtracted int4 rows, packed two per byte
  (dim c | dim c + D/2 << 4), per-row fp32 scales, and the mean-term biases.
* `_sale_select_kernel`: one program per (query block, head).  Exact pass over the sink, local and diagonal
  blocks (online max/sum, base 2), then the int4 estimate (two int8 `tl.dot`s over D/2 → int32: int8 MMA on
  Hopper) over the other causal blocks; writes the kept key blocks as a compact ascending index list
  (kv_idx, kv_cnt) and a block mask.
* `_sale_attn_kernel`: one program per (query block, head): online-softmax flash attention over the listed
  blocks only.
* v2 kernels (same decisions / outputs; selectable per call `impl=`, env `QPASS_SALE_SELECT` / `QPASS_SALE_ATTN`,
  defaults `SELECT_IMPL` / `ATTN_IMPL`): `_sale_select2_kernel` (QB query blocks per program sharing each key
  tile, keys pre-unpacked to [S, D] fp8 by the quantize kernel, heaviest blocks first) and `_sale_attn2_kernel`
  (unmasked loop below the diagonal, optional two kept blocks per iteration, heaviest blocks first).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .sale_reference import TAU_DENSE

LOG2E = 1.4426950408889634

# Shipped launch configs (all of `shipped_configs()` compile for sm_90 in tests/kernels/test_compile_sm90.py).
QUANT_CONFIG = dict(BLOCK_R=64, num_warps=4, num_stages=1)
SELECT_CONFIG = dict(num_warps=4, num_stages=2)  # stacked rows (GS * BLOCK_M) <= 128


def key_blocks(rows, block_n):
    """Key blocks per estimate iteration: up to 256 keys, at most 32K int32 accumulators per tile."""
    import os
    if os.environ.get("QPASS_SALE_KB"):  # tuning sweep (benchmarks/attention.py --sweep)
        return int(os.environ["QPASS_SALE_KB"])
    return max(1, min(256 // block_n, 8192 // (rows * block_n)))  # measured: larger tiles spill (docs/sale.md)


def use_fp8():
    """fp8 (e4m3) estimate operands on the GPU (Hopper+); int8 in the interpreter and when QPASS_SALE_INT8=1."""
    import os
    return not _interp() and os.environ.get("QPASS_SALE_INT8", "0") != "1" and torch.cuda.is_available() \
        and torch.cuda.get_device_capability() >= (8, 9)


def select_config(rows):
    """Launch config of the select kernel by stacked query rows (GS * BLOCK_M)."""
    import os
    if os.environ.get("QPASS_SALE_WARPS"):
        return dict(num_warps=int(os.environ["QPASS_SALE_WARPS"]), num_stages=int(os.environ.get("QPASS_SALE_STAGES", 2)))
    return dict(num_warps=4, num_stages=2) if rows <= 128 else dict(num_warps=8, num_stages=3)
def select2_config(rows, split=False):
    """Launch config of select v2: 8 warps at every tile size (ptxas -v for sm_90a, D 128, 128x64 blocks: 4 warps
    spill 0.5-1 KB per thread at 255 registers; 8 warps use ~245 registers with no spill for P = 8 / 16)."""
    import os
    if os.environ.get("QPASS_SALE_WARPS"):
        return dict(num_warps=int(os.environ["QPASS_SALE_WARPS"]), num_stages=int(os.environ.get("QPASS_SALE_STAGES", 2)))
    return dict(num_warps=8, num_stages=2)  # split too (P 16 QB 4: 164 registers, QB 1: 128; 4 warps spill)


THR_CONFIG = dict(num_warps=8, num_stages=2)
ATTN_CONFIG = {64: dict(num_warps=4, num_stages=3), 128: dict(num_warps=8, num_stages=2)}  # by head dim
ATTN2_CONFIG = {64: dict(num_warps=4, num_stages=3), 128: dict(num_warps=8, num_stages=3)}  # v2, by head dim
# Defaults of the launchers, from `benchmarks/attention.py --quick` on the H100 (docs/sale.md "Kernel v2"): at
# 64K select v2 (split exact pass + bias MMA) 5.6 ms vs v1 12.4 (P 16), attention v2 8.9 vs v1 10.1 ms (90%);
# at full resolution v1 is faster (42.4 vs 48.6 ms), so "auto" = v2 only for pooled estimates (P >= SELECT2_MIN_POOL).
SELECT_IMPL = "auto"
SELECT2_MIN_POOL = 8
ATTN_IMPL = "v2"
SELECT2_SPLIT = True  # select v2: exact pass in its own kernel (`_sale_thr_kernel`)
SELECT2_BIAS_MMA = True  # select v2: key bias by a one-hot fp16 MMA instead of per-head selects
ATTN2_NPI = 1  # kept blocks per unmasked iteration of attn v2 (2: 128-key tiles; faster at 64K, slower at 128K)


def attn2_tail(block_m, block_n):
    """Entries at the end of a kept-block list that may need the causal mask (a power of two ≥ the diagonal
    blocks + 1)."""
    return triton.next_power_of_2(max(block_m // block_n, 1) + 1)


@triton.jit
def _sale_quant_kernel(x_ptr, mean_ptr, other_ptr, pack_ptr, scale_ptr, bias_ptr, x8_ptr,
                       S, NH, sx_b, sx_h, sx_s,
                       D: tl.constexpr, BLOCK_R: tl.constexpr, NB: tl.constexpr, DIV: tl.constexpr,
                       BIAS_RAW: tl.constexpr, UNPACK: tl.constexpr = False):
    """Rows x[b, h, r, :] -> pack [bh, r, D/2] int8, scale [bh, r] fp32; bias[bh*NB + g, r] =
    (x or x̃)[r] · other[(bh // DIV) * NB + g] for g < NB.  UNPACK: also the int4 values unpacked, in dim order,
    to x8 [bh, r, D] (fp8 e4m3 or int8: the estimate operand of `_sale_select2_kernel`, no in-loop unpack)."""
    pid_r = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NH
    h = bh % NH
    D2: tl.constexpr = D // 2
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, D2)
    rmask = rows < S
    base = x_ptr + b * sx_b + h * sx_h + rows[:, None] * sx_s
    x_lo = tl.load(base + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    x_hi = tl.load(base + D2 + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    mu_lo = tl.load(mean_ptr + bh * D + cols)
    mu_hi = tl.load(mean_ptr + bh * D + D2 + cols)
    c_lo = x_lo - mu_lo[None, :]
    c_hi = x_hi - mu_hi[None, :]
    amax = tl.maximum(tl.max(tl.abs(c_lo), 1), tl.max(tl.abs(c_hi), 1))
    scale = amax / 7.0
    inv = tl.where(scale > 0, 1.0 / scale, 0.0)
    q_lo = (c_lo * inv[:, None] + 12582912.0) - 12582912.0  # round half to even
    q_hi = (c_hi * inv[:, None] + 12582912.0) - 12582912.0
    q_lo = tl.minimum(tl.maximum(q_lo, -7.0), 7.0).to(tl.int32)
    q_hi = tl.minimum(tl.maximum(q_hi, -7.0), 7.0).to(tl.int32)
    p = (q_lo & 0xF) | ((q_hi & 0xF) << 4)
    p = tl.where(p > 127, p - 256, p).to(tl.int8)
    tl.store(pack_ptr + bh * S * D2 + rows[:, None] * D2 + cols[None, :], p, mask=rmask[:, None])
    tl.store(scale_ptr + bh * S + rows, scale, mask=rmask)
    if UNPACK:  # exact small integers; fp32 -> fp16 -> target (fp8 e4m3 or int8)
        x8_base = x8_ptr + bh * S * D + rows[:, None] * D + cols[None, :]
        tl.store(x8_base, q_lo.to(tl.float16).to(x8_ptr.dtype.element_ty), mask=rmask[:, None])
        tl.store(x8_base + D2, q_hi.to(tl.float16).to(x8_ptr.dtype.element_ty), mask=rmask[:, None])
    if BIAS_RAW:
        b_lo, b_hi = x_lo, x_hi
    else:
        b_lo, b_hi = c_lo, c_hi
    for g in tl.static_range(NB):
        orow = (bh // DIV) * NB + g
        o_lo = tl.load(other_ptr + orow * D + cols)
        o_hi = tl.load(other_ptr + orow * D + D2 + cols)
        bias = tl.sum(b_lo * o_lo[None, :], 1) + tl.sum(b_hi * o_hi[None, :], 1)
        tl.store(bias_ptr + (bh * NB + g) * S + rows, bias, mask=rmask)


@triton.jit
def _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, n_sink, local_lo, n_exact,
                    sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The exact pass of every select kernel, for one head's query rows: online max / sum over the sink blocks
    [0, n_sink) and the local + diagonal blocks [local_lo, ...) -> each row's keep threshold (base 2, q_bias
    folded in; -inf for a dense head), and the head's tau."""
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_s + dcols[None, :], mask=rmask[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for t in range(0, n_exact):
        kb = tl.where(t < n_sink, t, local_lo + t - n_sink)
        keys = kb * BLOCK_N + ncols
        kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :], mask=keys[:, None] < S, other=0.0)
        s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale
        s = tl.where((keys[None, :] <= rows[:, None]) & (keys[None, :] < S), s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
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
                        N_SINK, WINDOW,
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

    last = tl.minimum((qblk * BLOCK_M + BLOCK_M - 1) // BLOCK_N, (S - 1) // BLOCK_N)  # last causal key block
    local_lo = tl.maximum(qblk * BLOCK_M - WINDOW, 0) // BLOCK_N
    n_sink = tl.minimum(N_SINK, last + 1)
    local_lo = tl.maximum(local_lo, n_sink)
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
        thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, n_sink, local_lo,
                                   n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, D, BLOCK_M, BLOCK_N)
        thr = tl.where(rmask, thr, float("inf"))
        tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)
        n_sparse += (tau > tau_dense).to(tl.int32)
    tl.debug_barrier()

    cnt = n_sink * 0
    for t in range(0, n_sink):
        tl.store(idx_base + cnt, t)
        tl.store(mask_base + t, 1)
        cnt += 1
    if n_sparse == 0:
        for kb in range(n_sink, local_lo):
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
        for kb0 in range(n_sink, local_lo, KB):  # KB key blocks per iteration, one decision per block
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
def _sale_select2_kernel(q_ptr, k_ptr, qp_ptr, qs_ptr, qb_ptr, kx_ptr, ks_ptr, kb_ptr, tau_ptr, thr_ptr,
                         idx_ptr, cnt_ptr, mask_ptr,
                         S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, qk_scale, tau_dense,
                         N_SINK, WINDOW,
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
    registers)."""
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
    last_v = tl.minimum((qv * BLOCK_M + BLOCK_M - 1) // BLOCK_N, (S - 1) // BLOCK_N)
    nsink_v = tl.minimum(N_SINK, last_v + 1)
    lo_v = tl.maximum(tl.maximum(qv * BLOCK_M - WINDOW, 0) // BLOCK_N, nsink_v)
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
        last = tl.minimum((qblk * BLOCK_M + BLOCK_M - 1) // BLOCK_N, (S - 1) // BLOCK_N)
        n_sink = tl.minimum(N_SINK, last + 1)
        local_lo = tl.maximum(tl.maximum(qblk * BLOCK_M - WINDOW, 0) // BLOCK_N, n_sink)
        n_exact = tl.where(qblk < NQB, n_sink + (last + 1 - local_lo), 0)
        for g in range(0, GS):
            h = h0 + g
            bh = b * H + h
            thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, n_sink, local_lo,
                                       n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, D, BLOCK_M, BLOCK_N)
            tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)
            n_sparse += (tau > tau_dense).to(tl.int32)
    tl.debug_barrier()

    cnt_v = tl.zeros([QB], tl.int32)
    for t in range(0, N_SINK):  # sink blocks
        st = qvalid & (t < nsink_v)
        tl.store(idx_v + cnt_v, t, mask=st)
        tl.store(mask_v + t, 1, mask=st)
        cnt_v += st.to(tl.int32)
    hi = tl.max(tl.where(qvalid, lo_v, 0), 0)  # estimated key blocks: [N_SINK, lo_v) per query block
    if n_sparse == 0:
        for kb in range(N_SINK, hi):
            st = qvalid & (kb < lo_v)
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
        KN: tl.constexpr = KB * BLOCK_N
        kcols = tl.arange(0, KN)
        sub = tl.arange(0, KB)
        hc = tl.arange(0, 32)  # BIAS_MMA: columns c < 16 pick head c's hi part, 16 + c its lo part
        onehot = ((hc[None, :] % 16) == grow[:, None]).to(tl.float16)
        hvalid = (hc % 16) < GS
        for kb0 in range(N_SINK, hi, KB):
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
            if KB == 1:
                hq = tl.max(tl.reshape(tl.max(est, 1) - thr, [QB, RQ]), 1)  # [QB]
                st = (hq > 0) & qvalid & (kb0 < lo_v)
                tl.store(idx_v + cnt_v, kb0, mask=st)
                tl.store(mask_v + kb0, st.to(tl.int8), mask=qvalid & (kb0 < lo_v))
                cnt_v += st.to(tl.int32)
            else:
                rmax = tl.max(tl.reshape(est, [PR, KB, BLOCK_N]), 2) - thr[:, None]  # [PR, KB]
                hq = tl.max(tl.reshape(rmax, [QB, RQ, KB]), 1)  # [QB, KB]
                kbs = kb0 + sub
                valid = qvalid[:, None] & (kbs[None, :] < lo_v[:, None])
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


@triton.jit
def _sale_thr_kernel(q_ptr, k_ptr, qb_ptr, tau_ptr, thr_ptr,
                     S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, qk_scale, tau_dense, N_SINK, WINDOW,
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
    last = tl.minimum((qblk * BLOCK_M + BLOCK_M - 1) // BLOCK_N, (S - 1) // BLOCK_N)
    n_sink = tl.minimum(N_SINK, last + 1)
    local_lo = tl.maximum(tl.maximum(qblk * BLOCK_M - WINDOW, 0) // BLOCK_N, n_sink)
    n_exact = n_sink + (last + 1 - local_lo)
    thr, tau = _row_thresholds(q_ptr, k_base, qb_ptr, tau_ptr, b, h, H, S, rows, rmask, n_sink, local_lo,
                               n_exact, sq_b, sq_h, sq_s, sk_s, qk_scale, tau_dense, D, BLOCK_M, BLOCK_N)
    tl.store(thr_ptr + bh * S + rows, thr, mask=rmask)


@triton.jit
def _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale,
                         D: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    """One online-softmax step over key block `kb` with the causal and length masks (both attention kernels)."""
    dcols = tl.arange(0, D)
    keys = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = keys < S
    kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :], mask=kmask[:, None], other=0.0)
    vt = tl.load(v_base + keys[:, None] * sv_s + dcols[None, :], mask=kmask[:, None], other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
        vt = vt.to(tl.float32)
    s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale
    s = tl.where((keys[None, :] <= rows[:, None]) & kmask[None, :], s, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
    return m_new, l_i, acc


@triton.jit
def _query_tile(q_ptr, k_ptr, v_ptr, qblk, bh, S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sv_b, sv_h,
                D: tl.constexpr, BLOCK_M: tl.constexpr, UPCAST: tl.constexpr):
    """A sparse-attention program's batch and head, query rows, q tile [BLOCK_M, D] and the K / V bases of its
    head's KV head (GQA by index)."""
    b = bh // H
    h = bh % H
    kvh = h // G
    rows = qblk * BLOCK_M + tl.arange(0, BLOCK_M)
    dcols = tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_s + dcols[None, :], mask=(rows < S)[:, None],
                other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    return b, h, rows, q, k_ptr + b * sk_b + kvh * sk_h, v_ptr + b * sv_b + kvh * sv_h


@triton.jit
def _store_tile(o_ptr, acc, l_i, b, h, rows, S, so_b, so_h, so_s, D: tl.constexpr):
    """Normalize the online-softmax accumulator (an all-masked row gives 0) and store the rows below S."""
    dcols = tl.arange(0, D)
    out = acc / tl.maximum(l_i, 1e-30)[:, None]
    tl.store(o_ptr + b * so_b + h * so_h + rows[:, None] * so_s + dcols[None, :], out.to(o_ptr.dtype.element_ty),
             mask=(rows < S)[:, None])


@triton.jit
def _sale_attn2_kernel(q_ptr, k_ptr, v_ptr, o_ptr, idx_ptr, cnt_ptr,
                       S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
                       qk_scale,
                       D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
                       ND: tl.constexpr, NPI: tl.constexpr = 1):
    """v2 of `_sale_attn_kernel` (same result): heaviest query blocks first; the kept blocks entirely below the
    diagonal (kb < qblk·BLOCK_M / BLOCK_N) run without any mask, only the tail of the list (≤ ND entries, found by
    looking at the last ND indices of the ascending list) runs the causal / length mask; the softmax scale is
    folded into one FMA (exp2(qk·c − m)).  NPI = 2: the unmasked part takes two kept blocks per iteration (a
    [2·BLOCK_N, D] gathered key tile: the 128-key tile of the usual Hopper flash config; an odd last one is masked
    by a per-column −inf)."""
    bh = tl.program_id(1)
    NQB = tl.cdiv(S, BLOCK_M)
    qblk = NQB - 1 - tl.program_id(0)
    NKB = tl.cdiv(S, BLOCK_N)
    dcols = tl.arange(0, D)
    ncols = tl.arange(0, BLOCK_N)
    b, h, rows, q, k_base, v_base = _query_tile(q_ptr, k_ptr, v_ptr, qblk, bh, S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h,
                                                sv_b, sv_h, D, BLOCK_M, UPCAST)
    out_row = bh * NQB + qblk
    lst = idx_ptr + out_row * NKB
    n = tl.load(cnt_ptr + out_row)
    kb_d = (qblk * BLOCK_M) // BLOCK_N  # first key block that can hold a key > some row of this block
    tpos = n - ND + tl.arange(0, ND)
    tail = tl.load(lst + tpos, mask=tpos >= 0, other=-1)
    n_full = n - tl.sum((tail >= kb_d).to(tl.int32), 0)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    if NPI == 1:
        for t in range(0, n_full):  # below the diagonal: no mask
            kb = tl.load(lst + t)
            keys = kb * BLOCK_N + ncols
            kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :])
            vt = tl.load(v_base + keys[:, None] * sv_s + dcols[None, :])
            if UPCAST:
                kt = kt.to(tl.float32)
                vt = vt.to(tl.float32)
            qk = tl.dot(q, tl.trans(kt)).to(tl.float32)
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk * qk_scale - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
    else:
        pcols = tl.arange(0, 2 * BLOCK_N)
        second = pcols >= BLOCK_N
        for t in range(0, n_full, 2):  # below the diagonal, two kept blocks per iteration
            kb_a = tl.load(lst + t)
            has_b = t + 1 < n_full
            kb_b = tl.load(lst + t + 1, mask=has_b, other=0)
            kb_b = tl.where(has_b, kb_b, kb_a)
            keys = tl.where(second, kb_b * BLOCK_N - BLOCK_N, kb_a * BLOCK_N) + pcols
            kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :])
            vt = tl.load(v_base + keys[:, None] * sv_s + dcols[None, :])
            if UPCAST:
                kt = kt.to(tl.float32)
                vt = vt.to(tl.float32)
            cb = tl.where(second & (t + 1 >= n_full), -float("inf"), 0.0)
            qk = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale + cb[None, :]
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
    for t in range(n_full, n):  # diagonal / last blocks: causal and length mask
        kb = tl.load(lst + t)
        m_i, l_i, acc = _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale,
                                             D, BLOCK_N, UPCAST)
    _store_tile(o_ptr, acc, l_i, b, h, rows, S, so_b, so_h, so_s, D)


@triton.jit
def _sale_attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, idx_ptr, cnt_ptr,
                      S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
                      qk_scale,
                      D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    qblk = tl.program_id(0)
    bh = tl.program_id(1)
    NKB = tl.cdiv(S, BLOCK_N)
    NQB = tl.cdiv(S, BLOCK_M)
    b, h, rows, q, k_base, v_base = _query_tile(q_ptr, k_ptr, v_ptr, qblk, bh, S, H, G, sq_b, sq_h, sq_s, sk_b, sk_h,
                                                sv_b, sv_h, D, BLOCK_M, UPCAST)
    out_row = bh * NQB + qblk
    n = tl.load(cnt_ptr + out_row)
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for t in range(0, n):
        kb = tl.load(idx_ptr + out_row * NKB + t)
        m_i, l_i, acc = _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale,
                                             D, BLOCK_N, UPCAST)
    _store_tile(o_ptr, acc, l_i, b, h, rows, S, so_b, so_h, so_s, D)


# ------------------------------------------------------------------ launchers
def _interp() -> bool:
    import os
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check(q, k, v=None, op="sale kernels"):
    """The SALE launchers' argument checks (what the kernels assume), with messages naming the argument."""
    from .checks import _qkv
    _qkv(op, q, k, v, True, same_len=True)
    torch._check_value(q.shape[-1] in (64, 128), lambda: f"{op}: q's head dim must be 64 or 128, got {q.shape[-1]}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t is not None:
            torch._check(t.stride(-1) == 1, lambda: f"{op}: {name} must have unit stride along the head dim, "
                                                    f"got strides {t.stride()}")


def _check_blocks(block_m, block_n, pool, op):
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        torch._check_value(isinstance(b, int) and b >= 16 and b & (b - 1) == 0,
                           lambda: f"{op}: {name} must be a power of two >= 16, got {b}")
    torch._check_value(pool >= 1 and pool & (pool - 1) == 0 and block_m % pool == 0,
                       lambda: f"{op}: pool must be a power of two dividing block_m={block_m}, got {pool}")


def sale_quantize_triton(q, k, unpack=False):
    """(q_pack, q_scale, q_bias, k_pack, k_scale, k_bias) as in `sale_reference.QKQuant`, flattened over
    (batch, head): q_pack [B*H, S, D/2] int8, scales / biases [B*H(kv), S] fp32.  unpack=True appends k_x
    [B*Hkv, S, D]: the keys' int4 values unpacked in dim order (fp8 e4m3 on Hopper, else int8; select v2)."""
    _check(q, k)
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    q_mean = q.mean(2, dtype=torch.float32).reshape(B * H, D).contiguous()
    k_mean = k.mean(2, dtype=torch.float32).reshape(B * Hkv, D).contiguous()
    dev = q.device
    q_pack = torch.empty(B * H, S, D // 2, dtype=torch.int8, device=dev)
    k_pack = torch.empty(B * Hkv, S, D // 2, dtype=torch.int8, device=dev)
    q_scale = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    k_scale = torch.empty(B * Hkv, S, dtype=torch.float32, device=dev)
    q_bias = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    k_bias = torch.empty(B * H, S, dtype=torch.float32, device=dev)
    c = QUANT_CONFIG
    _sale_quant_kernel[(triton.cdiv(S, c["BLOCK_R"]), B * H)](
        q, q_mean, k_mean, q_pack, q_scale, q_bias, q_pack, S, H, q.stride(0), q.stride(1), q.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=1, DIV=G, BIAS_RAW=True, num_warps=c["num_warps"], num_stages=c["num_stages"])
    k_x = torch.empty(B * Hkv, S, D, dtype=_x8_dtype(), device=dev) if unpack else k_pack
    _sale_quant_kernel[(triton.cdiv(S, c["BLOCK_R"]), B * Hkv)](
        k, k_mean, q_mean, k_pack, k_scale, k_bias, k_x, S, Hkv, k.stride(0), k.stride(1), k.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=G, DIV=1, BIAS_RAW=False, UNPACK=unpack, num_warps=c["num_warps"],
        num_stages=c["num_stages"])
    if unpack:
        return q_pack, q_scale, q_bias, k_pack, k_scale, k_bias, k_x
    return q_pack, q_scale, q_bias, k_pack, k_scale, k_bias


def _x8_dtype():
    return torch.float8_e4m3fn if use_fp8() else torch.int8


def _pool_quantize_q(q, pool):
    """Mean-pooled query rows (pool consecutive rows; a short last group averages its valid rows), quantized like
    the full rows (mean-subtracted int4, per-row scale): (pack [B*H, ceil(S/pool), D/2], scale)."""
    B, H, S, D = q.shape
    SP = triton.cdiv(S, pool)
    if S % pool == 0:
        qpool = q.reshape(B, H, SP, pool, D).mean(3, dtype=torch.float32)
    else:
        qf = torch.nn.functional.pad(q.float(), (0, 0, 0, SP * pool - S))
        cnt = torch.full((SP,), float(pool), device=q.device)
        cnt[-1] = S - (SP - 1) * pool
        qpool = (qf.view(B, H, SP, pool, D).sum(3) / cnt[:, None]).contiguous()
    q_mean = q.mean(2, dtype=torch.float32).reshape(B * H, D).contiguous()
    pack = torch.empty(B * H, SP, D // 2, dtype=torch.int8, device=q.device)
    scale = torch.empty(B * H, SP, dtype=torch.float32, device=q.device)
    bias = torch.empty(B * H, SP, dtype=torch.float32, device=q.device)
    c = QUANT_CONFIG
    _sale_quant_kernel[(triton.cdiv(SP, c["BLOCK_R"]), B * H)](
        qpool, q_mean, q_mean, pack, scale, bias, pack, SP, H, qpool.stride(0), qpool.stride(1), qpool.stride(2),
        D=D, BLOCK_R=c["BLOCK_R"], NB=1, DIV=1, BIAS_RAW=True, num_warps=c["num_warps"], num_stages=c["num_stages"])
    return pack, scale


def select_impl(impl=None, pool=1):
    """Estimate/select kernel: "v1" (`_sale_select_kernel`) or "v2" (`_sale_select2_kernel`); "auto": v2 for
    pooled estimates (pool >= SELECT2_MIN_POOL), v1 at full resolution; env QPASS_SALE_SELECT."""
    import os
    impl = impl or os.environ.get("QPASS_SALE_SELECT") or SELECT_IMPL
    if impl == "auto":
        impl = "v2" if pool >= SELECT2_MIN_POOL else "v1"
    assert impl in ("v1", "v2"), impl
    return impl


def attn_impl(impl=None):
    """Sparse attention kernel: "v1" (`_sale_attn_kernel`) or "v2" (`_sale_attn2_kernel`); env QPASS_SALE_ATTN."""
    import os
    impl = impl or os.environ.get("QPASS_SALE_ATTN") or ATTN_IMPL
    assert impl in ("v1", "v2"), impl
    return impl


def select2_blocks(gs, block_m, pool, qb=None):
    """(QB query blocks per program, RQ estimate rows per query block) of select v2: by default as many blocks as
    fit 128 stacked rows, at most 16 (KV-group selection, 128-row blocks: P 16 -> QB 4, P 8 -> 2; per head: P 16
    -> 16, P 8 -> 8; full resolution: 1); env QPASS_SALE_QB.  H100, 64K, group, P 16: QB 4 5.6 ms, QB 8 6.2,
    QB 2 10.8; P 8: QB 2 8.5, QB 4 9.2 ms; per head with QB 4 (P 16): 11.1 ms."""
    import os
    rows = gs * block_m // pool
    if qb is None:
        qb = int(os.environ.get("QPASS_SALE_QB", 0)) or max(1, min(16, 128 // rows))
    return qb, max(rows, 16 // qb)


def select2_bias_mma(bias_mma=None):
    """select v2: key biases by a one-hot MMA (True) or by per-head selects (False); env QPASS_SALE_BIAS_MMA."""
    import os
    if bias_mma is None:
        bias_mma = os.environ.get("QPASS_SALE_BIAS_MMA", str(int(SELECT2_BIAS_MMA))) == "1"
    return bool(bias_mma)


def sale_select_triton(q, k, tau, scale, block_m=64, block_n=64, sink=64, window=256, tau_dense=TAU_DENSE,
                       quant=None, group=True, pool=1, impl=None, qb=None, bias_mma=None, split=None):
    """(kv_idx [B, H, nQB, nKB] int32, kv_cnt [B, H, nQB] int32, mask [B, H, nQB, nKB] int8).
    group=True: one block map per KV group (the union of its query heads' selections; see docs/sale.md).
    pool > 1: coarse estimate from mean-pooled query rows (`pool` rows each; power of two dividing block_m;
    reference `sale_reference.sale_block_scores_ref(..., pool=pool)`).  impl: "v1" / "v2" kernel (`select_impl`;
    same decisions), qb: v2's query blocks per program (`select2_blocks`)."""
    _check(q, k, op="sale_select_triton")
    _check_blocks(block_m, block_n, pool, "sale_select_triton")
    if select_impl(impl, pool) == "v2":
        return _select_v2(q, k, tau, scale, block_m, block_n, sink, window, tau_dense, quant, group, pool, qb,
                          bias_mma, split)
    B, H, S, D = q.shape
    G = H // k.shape[1]
    GS = G if (group and G > 1 and (G & (G - 1)) == 0 and G * block_m <= 512) else 1
    quant = sale_quantize_triton(q, k) if quant is None else quant
    q_pack, q_scale, q_bias, k_pack, k_scale, k_bias = quant
    if pool > 1:
        assert block_m % pool == 0 and pool & (pool - 1) == 0, "pool: a power of two dividing block_m"
        q_pack, q_scale = _pool_quantize_q(q, pool)
    pr = max(GS * block_m // pool, 16)
    nqb, nkb = triton.cdiv(S, block_m), triton.cdiv(S, block_n)
    NG = H // GS
    idx = torch.zeros(B, NG, nqb, nkb, dtype=torch.int32, device=q.device)
    cnt = torch.empty(B, NG, nqb, dtype=torch.int32, device=q.device)
    mask = torch.zeros(B, NG, nqb, nkb, dtype=torch.int8, device=q.device)
    thr = torch.empty(B * H, S, dtype=torch.float32, device=q.device)
    tau = torch.as_tensor(tau, dtype=torch.float32, device=q.device).reshape(-1).expand(H).contiguous()
    _sale_select_kernel[(nqb, B * NG)](
        q, k, q_pack, q_scale, q_bias, k_pack, k_scale, k_bias, tau, thr, idx, cnt, mask,
        S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        scale * LOG2E, tau_dense, triton.cdiv(sink, block_n), window,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, GS=GS, POOL=pool, PR=pr, KB=key_blocks(pr, block_n),
        F8=use_fp8(), **select_config(pr))
    if GS > 1:
        idx, cnt, mask = (t.repeat_interleave(GS, 1) for t in (idx, cnt, mask))
    elif group and G > 1:  # group size not a power of two (or too many rows): per-head kernel, union here
        from .sale_reference import group_union, mask_to_index
        mask = group_union(mask.bool(), k.shape[1])
        idx, cnt = mask_to_index(mask)
        mask = mask.to(torch.int8)
    return idx, cnt, mask


def select2_split(split=None):
    """select v2: exact pass in its own kernel (True) or inside the select kernel; env QPASS_SALE_SPLIT."""
    import os
    if split is None:
        split = os.environ.get("QPASS_SALE_SPLIT", str(int(SELECT2_SPLIT))) == "1"
    return bool(split)


def _select_v2(q, k, tau, scale, block_m, block_n, sink, window, tau_dense, quant, group, pool, qb, bias_mma=None,
               split=None):
    B, H, S, D = q.shape
    G = H // k.shape[1]
    GS = G if (group and G > 1 and (G & (G - 1)) == 0 and G * block_m <= 512) else 1
    quant = sale_quantize_triton(q, k, unpack=True) if quant is None else quant
    q_pack, q_scale, q_bias, k_pack, k_scale, k_bias = quant[:6]
    if len(quant) > 6:
        k_x = quant[6]
    else:  # a v1 quant tuple: unpack the keys here
        from .sale_reference import unpack_int4_halves
        k_x = unpack_int4_halves(k_pack)
        k_x = k_x.to(torch.float16).to(_x8_dtype()) if _x8_dtype() != torch.int8 else k_x.contiguous()
    if pool > 1:
        assert block_m % pool == 0 and pool & (pool - 1) == 0, "pool: a power of two dividing block_m"
        q_pack, q_scale = _pool_quantize_q(q, pool)
    QB, RQ = select2_blocks(GS, block_m, pool, qb)
    pr = QB * RQ
    nqb, nkb = triton.cdiv(S, block_m), triton.cdiv(S, block_n)
    NG = H // GS
    idx = torch.zeros(B, NG, nqb, nkb, dtype=torch.int32, device=q.device)
    cnt = torch.empty(B, NG, nqb, dtype=torch.int32, device=q.device)
    mask = torch.zeros(B, NG, nqb, nkb, dtype=torch.int8, device=q.device)
    thr = torch.empty(B * H, S, dtype=torch.float32, device=q.device)
    tau = torch.as_tensor(tau, dtype=torch.float32, device=q.device).reshape(-1).expand(H).contiguous()
    split = select2_split(split)
    if split:
        _sale_thr_kernel[(nqb, B * H)](
            q, k, q_bias, tau, thr, S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
            k.stride(2), scale * LOG2E, tau_dense, triton.cdiv(sink, block_n), window,
            D=D, BLOCK_M=block_m, BLOCK_N=block_n, **THR_CONFIG)
    _sale_select2_kernel[(triton.cdiv(nqb, QB), B * NG)](
        q, k, q_pack, q_scale, q_bias, k_x, k_scale, k_bias, tau, thr, idx, cnt, mask,
        S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        scale * LOG2E, tau_dense, triton.cdiv(sink, block_n), window,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, GS=GS, POOL=pool, QB=QB, RQ=RQ, KB=key_blocks(pr, block_n),
        F8=k_x.dtype != torch.int8, BIAS_MMA=select2_bias_mma(bias_mma), SPLIT=split, **select2_config(pr, split))
    if GS > 1:
        idx, cnt, mask = (t.repeat_interleave(GS, 1) for t in (idx, cnt, mask))
    elif group and G > 1:
        from .sale_reference import group_union, mask_to_index
        mask = group_union(mask.bool(), k.shape[1])
        idx, cnt = mask_to_index(mask)
        mask = mask.to(torch.int8)
    return idx, cnt, mask


def attn2_config(D):
    import os
    if os.environ.get("QPASS_SALE_ATTN_WARPS"):
        return dict(num_warps=int(os.environ["QPASS_SALE_ATTN_WARPS"]),
                    num_stages=int(os.environ.get("QPASS_SALE_ATTN_STAGES", 2)))
    return dict(ATTN2_CONFIG[D])


def sale_sparse_attention_triton(q, k, v, idx, cnt, scale, block_m=64, block_n=64, impl=None, npi=None):
    """impl: "v1" / "v2" kernel (`attn_impl`); npi: v2's kept blocks per unmasked iteration (1 or 2; default
    ATTN2_NPI, env QPASS_SALE_NPI)."""
    import os
    npi = npi or int(os.environ.get("QPASS_SALE_NPI", 0)) or ATTN2_NPI
    _check(q, k, v, op="sale_sparse_attention_triton")
    _check_blocks(block_m, block_n, 1, "sale_sparse_attention_triton")
    B, H, S, D = q.shape
    G = H // k.shape[1]
    nqb = triton.cdiv(S, block_m)
    o = torch.empty_like(q)
    if attn_impl(impl) == "v2":
        _sale_attn2_kernel[(nqb, B * H)](
            q, k, v, o, idx, cnt, S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
            k.stride(2), v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
            scale * LOG2E, D=D, BLOCK_M=block_m, BLOCK_N=block_n,
            UPCAST=_interp() and q.dtype == torch.bfloat16, ND=attn2_tail(block_m, block_n), NPI=npi,
            **attn2_config(D))
        return o
    _sale_attn_kernel[(nqb, B * H)](
        q, k, v, o, idx, cnt, S, H, G, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        scale * LOG2E, D=D, BLOCK_M=block_m, BLOCK_N=block_n,
        UPCAST=_interp() and q.dtype == torch.bfloat16, **ATTN_CONFIG[D])
    return o


def sale_attention_triton(q, k, v, tau, scale=None, block_m=64, block_n=64, sink=64, window=256,
                          tau_dense=TAU_DENSE, group=True, pool=1, select=None, attn=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    _check(q, k, v, op="sale_attention_triton")
    idx, cnt, _ = sale_select_triton(q, k, tau, scale, block_m, block_n, sink, window, tau_dense, group=group,
                                     pool=pool, impl=select)
    return sale_sparse_attention_triton(q, k, v, idx, cnt, scale, block_m, block_n, impl=attn)


def shipped_configs():
    """[(name, kernel, signature, constexprs, options)] for the sm_90 compile check (kernels/configs.py format)."""
    out = []
    for dt in ("*fp16", "*bf16"):
        for D in (64, 128):
            c = dict(QUANT_CONFIG)
            br = c.pop("BLOCK_R")
            qsig = dict(x_ptr=dt, mean_ptr="*fp32", other_ptr="*fp32", pack_ptr="*i8", scale_ptr="*fp32",
                        bias_ptr="*fp32", x8_ptr="*i8", S="i32", NH="i32", sx_b="i32", sx_h="i32", sx_s="i32")
            out.append((f"sale_quant_q[{dt},D={D}]", _sale_quant_kernel, qsig,
                        dict(D=D, BLOCK_R=br, NB=1, DIV=4, BIAS_RAW=True, UNPACK=False), c))
            out.append((f"sale_quant_k[{dt},D={D}]", _sale_quant_kernel, qsig,
                        dict(D=D, BLOCK_R=br, NB=4, DIV=1, BIAS_RAW=False, UNPACK=False), c))
            out.append((f"sale_quant_k_unpack[{dt},D={D}]", _sale_quant_kernel, dict(qsig, x8_ptr="*fp8e4nv"),
                        dict(D=D, BLOCK_R=br, NB=4, DIV=1, BIAS_RAW=False, UNPACK=True), c))
            for bm, bn in ((64, 64), (128, 64)):
                ssig = dict(q_ptr=dt, k_ptr=dt, qp_ptr="*i8", qs_ptr="*fp32", qb_ptr="*fp32", kp_ptr="*i8",
                            ks_ptr="*fp32", kb_ptr="*fp32", tau_ptr="*fp32", thr_ptr="*fp32", idx_ptr="*i32", cnt_ptr="*i32",
                            mask_ptr="*i8", S="i32", H="i32", G="i32", sq_b="i32", sq_h="i32", sq_s="i32",
                            sk_b="i32", sk_h="i32", sk_s="i32", qk_scale="fp32", tau_dense="fp32",
                            N_SINK="i32", WINDOW="i32")
                for gs, pool in ((1, 1), (4, 1), (4, 8), (4, 16), (1, 16)):
                    pr = max(gs * bm // pool, 16)
                    out.append((f"sale_select[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool}]", _sale_select_kernel, ssig,
                                dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, PR=pr, F8=True,
                                     KB=key_blocks(pr, bn)), select_config(pr)))
                    if gs == 4 and bm == 64:  # v2: the stacked 4-head kernel ships with 128-row blocks only
                        continue
                    qbs = [select2_blocks(gs, bm, pool, None)[0]]
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4) and pool > 1:  # benchmark --quick sweeps QB
                        qbs = sorted({*qbs, 1, 2, 4})
                    for qb in qbs:
                        qb_, rq = select2_blocks(gs, bm, pool, qb)
                        pr2 = qb_ * rq
                        out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_}]",
                                    _sale_select2_kernel, {("kx_ptr" if a == "kp_ptr" else a): ("*fp8e4nv" if a == "kp_ptr" else t) for a, t in ssig.items()},
                                    dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                         KB=key_blocks(pr2, bn), BIAS_MMA=SELECT2_BIAS_MMA, SPLIT=SELECT2_SPLIT),
                                    select2_config(pr2, SELECT2_SPLIT)))
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4):  # benchmark --quick: the exact pass split off
                        for qb_ in qbs:
                            qb_, rq = select2_blocks(gs, bm, pool, qb_)
                            out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_},SPLIT]",
                                        _sale_select2_kernel, out[-1][2],
                                        dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                             KB=key_blocks(qb_ * rq, bn), BIAS_MMA=SELECT2_BIAS_MMA, SPLIT=True),
                                        select2_config(qb_ * rq, True)))
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4):  # benchmark --quick: the one-hot MMA bias
                        qb_, rq = select2_blocks(gs, bm, pool, None)
                        out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_},BIAS_MMA]",
                                    _sale_select2_kernel, out[-1][2],
                                    dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                         KB=key_blocks(qb_ * rq, bn), BIAS_MMA=not SELECT2_BIAS_MMA,
                                         SPLIT=SELECT2_SPLIT), select2_config(qb_ * rq, SELECT2_SPLIT)))
                tsig = dict(q_ptr=dt, k_ptr=dt, qb_ptr="*fp32", tau_ptr="*fp32", thr_ptr="*fp32", S="i32", H="i32",
                            G="i32", sq_b="i32", sq_h="i32", sq_s="i32", sk_b="i32", sk_h="i32", sk_s="i32",
                            qk_scale="fp32", tau_dense="fp32", N_SINK="i32", WINDOW="i32")
                out.append((f"sale_thr[{dt},D={D},{bm}x{bn}]", _sale_thr_kernel, tsig,
                            dict(D=D, BLOCK_M=bm, BLOCK_N=bn), dict(THR_CONFIG)))
                asig = dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, o_ptr=dt, idx_ptr="*i32", cnt_ptr="*i32", S="i32",
                            H="i32", G="i32", **{f"s{t}_{a}": "i32" for t in "qkvo" for a in "bhs"},
                            qk_scale="fp32")
                out.append((f"sale_attn[{dt},D={D},{bm}x{bn}]", _sale_attn_kernel, asig,
                            dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False), dict(ATTN_CONFIG[D])))
                for cfg in [ATTN2_CONFIG[D]] + ([dict(num_warps=8, num_stages=2), dict(num_warps=4, num_stages=3)]
                                                if (dt, D, bm) == ("*bf16", 128, 128) else []):
                    out.append((f"sale_attn2[{dt},D={D},{bm}x{bn},w{cfg['num_warps']}s{cfg['num_stages']}]",
                                _sale_attn2_kernel, asig, dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False,
                                                              ND=attn2_tail(bm, bn), NPI=ATTN2_NPI), dict(cfg)))
                    if (dt, D, bm) == ("*bf16", 128, 128):  # benchmark --quick: two blocks per iteration
                        out.append((f"sale_attn2[{dt},D={D},{bm}x{bn},w{cfg['num_warps']}s{cfg['num_stages']},NPI=2]",
                                    _sale_attn2_kernel, asig, dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False,
                                                                  ND=attn2_tail(bm, bn), NPI=2), dict(cfg)))
    return out
