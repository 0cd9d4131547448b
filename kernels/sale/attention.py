"""SALE block-sparse flash attention (forward), `_sale_attn2_kernel`: one program per (query block, head),
heaviest query blocks first, online softmax over the kept key blocks only (kv_idx / kv_cnt from select).
MWIN: the model's sliding window (key j seen by row i iff i - MWIN < j <= i; 2^30 = full causal).  Select never
lists a block wholly outside it; blocks at its edge (kb < `w_full` of select.py `window_limits`) get the element
mask, and a row that has seen no key yet keeps a zero accumulator (no exp2(-inf + inf)).
"""
from __future__ import annotations

import triton

from ..tiling import next_pow2
import triton.language as tl

ATTN2_CONFIG = {64: dict(num_warps=4, num_stages=3), 128: dict(num_warps=8, num_stages=3)}  # by head dim


def attn2_tail(block_m, block_n):
    """Entries at the end of a kept-block list that may need the causal mask (a power of two ≥ the diagonal
    blocks + 1)."""
    return next_pow2(max(block_m // block_n, 1) + 1)


def attn2_config(D, launch=None):
    """Launch config by head dim; `launch` (num_warps, num_stages) overrides."""
    return dict(launch) if launch else dict(ATTN2_CONFIG[D])


@triton.jit
def _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale, MWIN,
                         D: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr):
    """One online-softmax step over key block `kb` with the causal, length and model-window masks (both attention
    kernels)."""
    dcols = tl.arange(0, D)
    keys = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = keys < S
    kt = tl.load(k_base + keys[:, None] * sk_s + dcols[None, :], mask=kmask[:, None], other=0.0)
    vt = tl.load(v_base + keys[:, None] * sv_s + dcols[None, :], mask=kmask[:, None], other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
        vt = vt.to(tl.float32)
    s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale
    seen = (keys[None, :] <= rows[:, None]) & kmask[None, :] & (rows[:, None] - keys[None, :] < MWIN)
    s = tl.where(seen, s, -float("inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row with no key seen yet (window edge)
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
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
                       qk_scale, MWIN,
                       D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
                       ND: tl.constexpr, NPI: tl.constexpr = 1):
    """v2 of `_sale_attn_kernel` (same result): heaviest query blocks first; the kept blocks entirely below the
    diagonal (kb < qblk·BLOCK_M / BLOCK_N) run without any mask, only the tail of the list (≤ ND entries, found by
    looking at the last ND indices of the ascending list) runs the causal / length mask; the softmax scale is
    folded into one FMA (exp2(qk·c − m)).  NPI = 2: the unmasked part takes two kept blocks per iteration (a
    [2·BLOCK_N, D] gathered key tile: the 128-key tile of the usual Hopper flash config; an odd last one is masked
    by a per-column −inf).  Kept blocks at the model window's edge (kb < w_full) get its element mask in either
    loop."""
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
    i_max = qblk * BLOCK_M + BLOCK_M - 1
    w_full = tl.where(i_max >= MWIN, tl.maximum(i_max - MWIN, 0) // BLOCK_N + 1, 0)  # blocks below: window edge
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
            if kb < w_full:
                qk = tl.where(rows[:, None] - keys[None, :] < MWIN, qk, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_use = tl.where(m_new == -float("inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_use)
            p = tl.exp2(qk * qk_scale - m_use[:, None])
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
            if kb_a < w_full:  # kb_a < kb_b: the pair reaches the window's edge only if its first block does
                qk = tl.where(rows[:, None] - keys[None, :] < MWIN, qk, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_use = tl.where(m_new == -float("inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_use)
            p = tl.exp2(qk - m_use[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
    for t in range(n_full, n):  # diagonal / last blocks: causal and length mask
        kb = tl.load(lst + t)
        m_i, l_i, acc = _attend_masked_block(q, m_i, l_i, acc, k_base, v_base, kb, rows, S, sk_s, sv_s, qk_scale,
                                             MWIN, D, BLOCK_N, UPCAST)
    _store_tile(o_ptr, acc, l_i, b, h, rows, S, so_b, so_h, so_s, D)

