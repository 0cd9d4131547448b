"""Grouped W4A16 expert linear: every routed row of every expert in one launch.

Program (m, n-block): row m finds its expert by counting the offsets at or below it (rows are sorted by expert,
so no host-side index is needed and an expert with no rows launches nothing of its own), then runs a GEMV of the
row against that expert's packed int4 rows. Simple and correct at decode sizes (a few rows per expert); at
prefill sizes every row re-reads its expert's weights, so a tiled per-expert GEMM would be the next step
(docs/moe.md).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..tiling import cdiv, next_pow2
from ..formats import norm_group
from ..launch import launch

MOE_CONFIG = dict(BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=1)


@triton.jit
def _moe_w4a16(x_ptr, w_ptr, s_ptr, z_ptr, offs_ptr, y_ptr, E, N, K, KB, NG, G, stride_xm, stride_ym,
               SIGNED: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(0)
    pid_n = tl.program_id(1)
    eo = tl.arange(0, BLOCK_E)
    ends = tl.load(offs_ptr + eo, mask=eo < E, other=2147483647)
    e = tl.sum((ends <= m).to(tl.int32), axis=0)  # the expert whose row range holds m; E = not routed
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = (offs_n < N) & ((offs_n * 0 + e) < E)  # block-shaped: the interpreter takes no scalar masks
    e = tl.minimum(e, E - 1)
    rows = e * N + offs_n  # row of the [E * N, *] packed / scale tensors
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < K
        xv = tl.load(x_ptr + m * stride_xm + k, mask=k_mask, other=0.0).to(tl.float32)
        mask = n_mask[:, None] & k_mask[None, :]
        byte = tl.load(w_ptr + rows[:, None] * KB + (k // 2)[None, :], mask=mask, other=0).to(tl.int32)
        q = (byte >> ((k % 2) * 4)[None, :]) & 15
        g = k // G
        s = tl.load(s_ptr + rows[:, None] * NG + g[None, :], mask=mask, other=0.0).to(tl.float32)
        if SIGNED:
            w = (q - ((q >> 3) << 4)).to(tl.float32) * s
        else:
            z = tl.load(z_ptr + rows[:, None] * NG + g[None, :], mask=mask, other=0.0).to(tl.float32)
            w = (q.to(tl.float32) - z) * s
        acc += tl.sum(w * xv[None, :], axis=1)
    tl.store(y_ptr + m * stride_ym + offs_n, acc.to(y_ptr.dtype.element_ty), mask=offs_n < N)


def moe_w4a16_triton(x, qweight, scales, zeros, offs, group_size: int, config=None):
    """x [S, K] (rows sorted by expert) -> y [S, N]; arguments as qpass::moe_w4a16."""
    S, K = x.shape
    E, N, KB = qweight.shape
    y = x.new_empty(S, N)
    if S == 0:
        return y
    cfg = dict(config or MOE_CONFIG)
    x = x.contiguous()
    z = zeros if zeros is not None else scales
    launch(_moe_w4a16, (S, cdiv(N, cfg["BLOCK_N"])),
           x, qweight, scales, z, offs, y, E, N, K, KB, scales.shape[-1], norm_group(K, group_size),
           x.stride(0), y.stride(0), SIGNED=zeros is None, BLOCK_E=next_pow2(E), **cfg)
    return y
