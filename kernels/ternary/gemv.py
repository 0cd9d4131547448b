"""Ternary GEMV for M = 1: each 2-bit code OR-ed into the mantissa of 2**23 (codes above bit 16 taken from
`word >> 16`), x pre-scaled by 4**-j; the +1 code offset is removed per group as sum(x). Tile
[BLOCK_N, 128 * num_warps] words: each thread holds all rows x 4 consecutive words of both planes (16-byte loads),
x shared by the rows in registers; GW = words per group.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..tiling import cdiv
from ..formats import as_words
from ..launch import launch

_MAGIC = tl.constexpr(1258291200)  # bits of 2**23

GEMV2_CONFIG = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2, num_stages=1)  # H100 sweep2 winner; BLOCK_KW = 128 * num_warps


@triton.jit
def _ternary_gemv2(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym,
                   GW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # _ternary_gemv with the W4A16 gemv2 tiling: [BLOCK_N, 128 * num_warps] words, each thread all rows x 4
    # consecutive words of both planes (16-byte loads), x shared by the rows in registers; GW = words per group.
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        w1 = tl.load(t1_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        w2 = tl.load(t2_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if GW == 0:
            g = wi * 0
        else:
            g = wi // GW
        a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
        h1 = w1 >> 16
        h2 = w2 >> 16
        p1 = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
        p2 = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
        xs = tl.zeros([BLOCK_KW], dtype=tl.float32)
        for j in tl.static_range(16):
            k = wi * 16 + j
            xv = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            xs += xv
            xj = (xv * (1.0 / (4 ** (j % 8))))[None, :]
            if j < 8:
                v1 = (w1 & (3 << (2 * j))) | _MAGIC
                v2 = (w2 & (3 << (2 * j))) | _MAGIC
            else:
                v1 = (h1 & (3 << (2 * (j - 8)))) | _MAGIC
                v2 = (h2 & (3 << (2 * (j - 8)))) | _MAGIC
            p1 += (v1.to(tl.float32, bitcast=True) - 8388608.0) * xj
            p2 += (v2.to(tl.float32, bitcast=True) - 8388608.0) * xj
        acc += a1 * (p1 - xs[None, :]) + a2 * (p2 - xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)



def ternary_gemv2(x2, t1, t2, a1, a2, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group."""
    M, K = x2.shape
    w1, w2 = as_words(t1), as_words(t2)
    N, KW = w1.shape
    cfg = dict(config or GEMV2_CONFIG)
    b = bias if bias is not None else a1
    launch(_ternary_gemv2, (cdiv(N, cfg["BLOCK_N"]), M), 
        x2, w1, w2, a1, a2, b, y, N, K, KW, a1.shape[1], x2.stride(0), y.stride(0),
        GW=0 if G >= K else G // 16, HAS_BIAS=bias is not None, **cfg)
    return y
