"""Batched decode (2-8 rows) for W4A16 and W4A8, on the unchanged formats.pack_int4 layout: `_gemv_rows`.

int4/gemv.py's kernel serves one row: its x lives in registers and every further row re-reads W (from L2). Here
each program owns BLOCK_N output columns and walks K in chunks of BLOCK_KW words; each word is decoded once (the
same "1.0-magic" decode as gemv.py, `_wdot`) and multiplied into up to ROWS rows of x, so W is read from HBM once
per call whatever the row count up to ROWS. The accumulator [ROWS, BLOCK_N, BLOCK_KW] is summed over K once, at
the end (one cross-thread reduction per program), with the (row, group) step applied per word.

W4A8: x holds the int8 codes (or the zero-centred codes as fp16) and `xs` each row's activation step; products
and sums of integers stay exact in fp32 (gemv.py's bound: |x| <= 255). Interpreter-safe (plain integer/float ops).

Not a default path yet: W4A16 runs it when asked (`kernel="gemv_rows"`); .gpu/gemv_rows_probe.py times it against
the kernels the dispatch picks at 2-16 rows (W4A16 "tc", W4A8 "mma", gemv4 re-reading W per row) on one GPU.
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

from ..formats import as_words, norm_group
from ..launch import launch
from ..tiling import cdiv, next_pow2
from .gemv import _XOR8, _wdot, _xprep

MAX_ROWS = 8  # rows per program; more rows run as several row blocks (each re-reads W)


@triton.jit
def _gemv_rows(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, xs_ptr, y_ptr, M, N, K, KW, NG, stride_xm, stride_ym,
               GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_XS: tl.constexpr,
               ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    r = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    r_mask = r < M
    # rows past M read row M - 1 (valid memory) and are not stored: no mask on every x load
    x_rows = x_ptr + tl.minimum(r, M - 1)[:, None, None] * stride_xm
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    n3 = offs_n[None, :, None]
    kw = tl.arange(0, BLOCK_KW)[None, None, :]
    acc = tl.zeros([ROWS, BLOCK_N, BLOCK_KW], dtype=tl.float32)
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + kw  # [1, 1, BLOCK_KW] word indices
        wmask = n_mask[None, :, None] & (wi < KW)
        words = tl.load(w_ptr + n3 * KW + wi, mask=wmask, other=0)
        if GW == 0:
            g = wi * 0
        else:
            g = wi // GW
        s = tl.load(s_ptr + n3 * NG + g, mask=wmask, other=0.0).to(tl.float32)
        if not HAS_ZERO:
            words = words ^ _XOR8  # signed nibbles -> offset binary; _xprep's c removes the +8
        x0, x1, x2, x3, x4, x5, x6, x7, c, xs = _xprep(x_rows, wi, K, HAS_ZERO)
        p = _wdot(words, x0, x1, x2, x3, x4, x5, x6, x7, c)  # [ROWS, BLOCK_N, BLOCK_KW]
        if HAS_ZERO:
            z = tl.load(z_ptr + n3 * NG + g, mask=wmask, other=0.0).to(tl.float32)
            p = p - z * xs
        acc += s * p
    y = tl.sum(acc, axis=2)
    if HAS_XS:  # W4A8: each row's activation step
        y = y * tl.load(xs_ptr + r, mask=r_mask, other=0.0)[:, None]
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + r[:, None] * stride_ym + offs_n[None, :], y.to(y_ptr.dtype.element_ty),
             mask=r_mask[:, None] & n_mask[None, :])


# BLOCK_KW = 32 x num_warps: one word per thread, every warp on the K axis, so x [ROWS, 1, BLOCK_KW] and the words
# [1, BLOCK_N, BLOCK_KW] get the same layout and rows and columns stay in each thread's registers. Otherwise
# Triton spreads the warps over x's rows and the words' columns and moves every decoded nibble through shared
# memory (sm_90 SASS of 8 x 32 words on 8 warps: 11 STSM, 20 LDSM and 20 barriers per K step; none with the rule).
# 4 columns x 128 words on 4 warps: 167 registers at 8 rows, no spills (cuobjdump --dump-resource-usage).
DEFAULT_CONFIG = dict(BLOCK_N=4, BLOCK_KW=128, num_warps=4)


@functools.lru_cache(maxsize=256)
def _rows_block(M: int) -> int:
    return min(next_pow2(M), MAX_ROWS)


def w4a16_gemv_rows(x2, qweight, scales, zeros, bias, group_size: int, y, config=None, x_scale=None):
    """x2 [M, K] (unit stride; fp16/bf16, or W4A8 codes with `x_scale` [M] fp32, their step) -> y [M, N]
    (preallocated). config: BLOCK_N, BLOCK_KW, num_warps (None: DEFAULT_CONFIG)."""
    M, K = x2.shape
    words = as_words(qweight)
    N, KW = words.shape
    G = norm_group(K, group_size)
    cfg = config or DEFAULT_CONFIG
    rows = _rows_block(M)
    grid = (cdiv(N, cfg["BLOCK_N"]), cdiv(M, rows))
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    xs = x_scale if x_scale is not None else scales
    launch(_gemv_rows, grid, x2, words, scales, z, b, xs, y, M, N, K, KW, scales.shape[1], x2.stride(0),
           y.stride(0), GW=0 if G >= K else G // 8, HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
           HAS_XS=x_scale is not None, ROWS=rows, **cfg)
