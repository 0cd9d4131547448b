"""Ternary for M >= 2: the swap-AB tensor-core kernel of int4/tc.py with the weight tile built as a1*T1 + a2*T2
in registers (trit planes: formats.pack_trits, 2 bits per trit, code t + 1, 16 trits per int32 word).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..formats import as_words
from ..tiling import group_scales, pick, swap_ab_step, swap_ab_store, swap_ab_tile, tc_grid, tc_gsub
from ..launch import launch

TC_CONFIGS = [  # (max M, config)
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)),
]


@triton.jit
def _trit_tile(t1_ptr, t2_ptr, a1_ptr, a2_ptr, offs_n, n_mask, k0, KW, NG, G, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GSUB: tl.constexpr):
    """The weight tile [BLOCK_N, BLOCK_K] at k0: a1 * T1 + a2 * T2 (trits = 2-bit codes - 1)."""
    NSUB: tl.constexpr = BLOCK_K // GSUB
    shifts = tl.arange(0, 16) * 2
    wi = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    wmask = n_mask[:, None] & (wi < KW)[None, :]
    w1 = tl.load(t1_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    w2 = tl.load(t2_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    c1 = ((w1[:, :, None] >> shifts[None, None, :]) & 3) - 1
    c2 = ((w2[:, :, None] >> shifts[None, None, :]) & 3) - 1
    c1 = tl.reshape(c1.to(tl.float32), [BLOCK_N, NSUB, GSUB])
    c2 = tl.reshape(c2.to(tl.float32), [BLOCK_N, NSUB, GSUB])
    a1 = group_scales(a1_ptr, offs_n, n_mask, k0, G, NG, NSUB, GSUB)
    a2 = group_scales(a2_ptr, offs_n, n_mask, k0, G, NG, NSUB, GSUB)
    return tl.reshape(c1 * a1[:, :, None] + c2 * a2[:, :, None], [BLOCK_N, BLOCK_K])


@triton.jit
def _ternary_tc(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
                HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GSUB: tl.constexpr):
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _trit_tile(t1_ptr, t2_ptr, a1_ptr, a2_ptr, offs_n, n_mask, k0, KW, NG, G, BLOCK_N, BLOCK_K, GSUB)
        acc = swap_ab_step(acc, w, x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K)
    swap_ab_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS)


def ternary_tc(x2, t1, t2, a1, a2, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group."""
    M, K = x2.shape
    w1, w2 = as_words(t1), as_words(t2)
    N, KW = w1.shape
    cfg = dict(config or pick(TC_CONFIGS, M))
    b = bias if bias is not None else a1
    launch(_ternary_tc, tc_grid(N, M, cfg), x2, w1, w2, a1, a2, b, y, M, N, K, KW, a1.shape[1], G, x2.stride(0),
                                    y.stride(0), HAS_BIAS=bias is not None, GSUB=tc_gsub(G, K, cfg["BLOCK_K"]),
                                    **cfg)
    return y
