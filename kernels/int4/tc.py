"""W4A16 for M >= 2: tensor cores, "swap AB": acc[N-tile, M-tile] = W_deq . X^T, so the weight tile fills the
>= 64-row slot of wgmma even for small M. Dequantize in registers, one scale multiply per element.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..formats import as_words
from ..tiling import group_scales, pick, swap_ab_step, swap_ab_store, swap_ab_tile, tc_grid, tc_gsub
from ..launch import launch

TC_CONFIGS = [  # (max M, config); one config per launch (autotune with >= 2 configs breaks the interpreter)
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)),
]


@triton.jit
def _int4_tile(w_ptr, s_ptr, z_ptr, offs_n, n_mask, k0, KW, NG, G, HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GSUB: tl.constexpr):
    """The dequantized weight tile [BLOCK_N, BLOCK_K] at k0: (q - z) * s, one scale multiply per element."""
    NSUB: tl.constexpr = BLOCK_K // GSUB
    shifts = tl.arange(0, 8) * 4
    wi = k0 // 8 + tl.arange(0, BLOCK_K // 8)
    words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
    if HAS_ZERO:
        nib = (words[:, :, None] >> shifts[None, None, :]) & 15
    else:
        nib = (words[:, :, None] << (28 - shifts)[None, None, :]) >> 28  # sign-extend
    wq = tl.reshape(nib.to(tl.float32), [BLOCK_N, NSUB, GSUB])
    s = group_scales(s_ptr, offs_n, n_mask, k0, G, NG, NSUB, GSUB)
    if HAS_ZERO:
        wq = wq - group_scales(z_ptr, offs_n, n_mask, k0, G, NG, NSUB, GSUB)[:, :, None]
    return tl.reshape(wq * s[:, :, None], [BLOCK_N, BLOCK_K])


@triton.jit
def _w4a16_tc(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
              HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GSUB: tl.constexpr):
    # GSUB = min(group, BLOCK_K): the tile holds BLOCK_K // GSUB whole groups (checked by the launcher)
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _int4_tile(w_ptr, s_ptr, z_ptr, offs_n, n_mask, k0, KW, NG, G, HAS_ZERO, BLOCK_N, BLOCK_K, GSUB)
        acc = swap_ab_step(acc, w, x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K)
    swap_ab_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS)


def w4a16_tc(x2, qweight, scales, zeros, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group."""
    M, K = x2.shape
    words = as_words(qweight)
    N, KW = words.shape
    cfg = dict(config or pick(TC_CONFIGS, M))
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    launch(_w4a16_tc, tc_grid(N, M, cfg), x2, words, scales, z, b, y, M, N, K, KW, scales.shape[1], G, x2.stride(0),
                                  y.stride(0), HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                                  GSUB=tc_gsub(G, K, cfg["BLOCK_K"]), **cfg)
    return y
