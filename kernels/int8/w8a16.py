"""W8A16: fp16 / bf16 / fp32 activations × int8 weights [N, K] (symmetric) with fp steps per output row or per
(row, group): the swap-AB tensor-core skeleton of kernels/tiling.py, the int8 tile dequantized in registers
(one scale multiply per element) before tl.dot. One launch config per M bucket, as int4/tc.py."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..checks import check_w8a16
from ..formats import norm_group
from ..launch import launch
from ..tiling import group_scales, pick, rows, swap_ab_step, swap_ab_store, swap_ab_tile, tc_grid, tc_gsub

W8A16_CONFIGS = [  # (max M, config): int8 tiles are twice the bytes of int4 ones, so BLOCK_K is half of tc.py's
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)),
]


def supported_group(K: int, group_size: int) -> bool:
    """The tile holds whole groups or lies inside one: the whole row, a power of two >= 16, or a multiple of 128
    (every config's BLOCK_K divides 128)."""
    G = norm_group(K, group_size)
    return G == K or (G >= 16 and (G & (G - 1)) == 0) or G % 128 == 0


@triton.jit
def _int8_tile(w_ptr, s_ptr, offs_n, n_mask, k0, K, NG, G, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               GSUB: tl.constexpr):
    """The dequantized weight tile [BLOCK_N, BLOCK_K] at k0: q * s (columns past K read 0)."""
    NSUB: tl.constexpr = BLOCK_K // GSUB
    k = k0 + tl.arange(0, BLOCK_K)
    wq = tl.load(w_ptr + offs_n[:, None] * K + k[None, :], mask=n_mask[:, None] & (k < K)[None, :], other=0)
    s = group_scales(s_ptr, offs_n, n_mask, k0, G, NG, NSUB, GSUB)
    return tl.reshape(tl.reshape(wq.to(tl.float32), [BLOCK_N, NSUB, GSUB]) * s[:, :, None], [BLOCK_N, BLOCK_K])


@triton.jit
def _w8a16(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, NG, G, stride_xm, stride_ym, HAS_BIAS: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GSUB: tl.constexpr):
    # GSUB = min(group, BLOCK_K): the tile holds BLOCK_K // GSUB whole groups (tc_gsub checks it)
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _int8_tile(w_ptr, s_ptr, offs_n, n_mask, k0, K, NG, G, BLOCK_N, BLOCK_K, GSUB)
        acc = swap_ab_step(acc, w, x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K)
    swap_ab_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS)


def w8a16_linear_triton(x, w_int8, scales, bias, group_size: int, config=None):
    """x [..., K] @ (w_int8 * scales)^T (+ bias) -> [..., N] in x's dtype; config: a launch config (None: the
    M bucket's)."""
    check_w8a16(x, w_int8, scales, bias, group_size, op="w8a16_linear_triton")
    torch._check_value(supported_group(x.shape[-1], group_size), lambda: (
        f"w8a16_linear_triton: group_size={group_size} at K={x.shape[-1]} is not supported by the kernel (it "
        f"takes the whole row, a power of two >= 16 or a multiple of 128); use int8/reference.w8a16_linear_ref"))
    return run(x, w_int8, scales, bias, group_size, config)


def run(x, w_int8, scales, bias, group_size: int, config=None):
    """`w8a16_linear_triton` on checked arguments (the op checks once per signature)."""
    K = x.shape[-1]
    x2 = rows(x)
    M, N = x2.shape[0], w_int8.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    cfg = dict(config or pick(W8A16_CONFIGS, M))
    G = norm_group(K, group_size)
    w = w_int8 if w_int8.is_contiguous() else w_int8.contiguous()
    launch(_w8a16, tc_grid(N, M, cfg), x2, w, scales, bias if bias is not None else scales, y, M, N, K,
           scales.shape[1], G, x2.stride(0), y.stride(0), HAS_BIAS=bias is not None,
           GSUB=tc_gsub(G, K, cfg["BLOCK_K"]), **cfg)
    return y.reshape(*x.shape[:-1], N)
