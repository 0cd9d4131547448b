"""Fast Walsh–Hadamard transform in Triton: each program transforms BLOCK_M rows of length P (a power of two)
in registers, log2(P) butterfly stages of adds and subtracts (O(P log P), no matrix), scaled by 1/√P.

A stage of half-width h views a row as [P / 2h, 2, h] and maps each pair (a, b) to (a + b, a − b); the pair axis
is brought last (permute) so `tl.split` / `tl.join` can take it apart and put it back.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..tiling import cdiv
from ..launch import launch

# Rows per program: large enough to keep a P = 1024 tile at 16K elements per program.
MAX_TILE = 16384


@triton.jit
def _fwht(x_ptr, y_ptr, M, stride_xm, stride_ym, scale, P: tl.constexpr, LOG_P: tl.constexpr,
          BLOCK_M: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, P)
    mask = (rows < M)[:, None]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    for s in tl.static_range(LOG_P):
        v = tl.permute(tl.reshape(x, (BLOCK_M, P >> (s + 1), 2, 1 << s)), (0, 1, 3, 2))
        a, b = tl.split(v)
        v = tl.join(a + b, a - b)
        x = tl.reshape(tl.permute(v, (0, 1, 3, 2)), (BLOCK_M, P))
    y = x * scale
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def block_m(p: int) -> int:
    return max(1, min(64, MAX_TILE // p))


def fwht_rows(x2d: torch.Tensor) -> torch.Tensor:
    """x2d [M, P] (last dim contiguous, P a power of two ≥ 2) → x2d @ H_P / √P, same dtype."""
    M, P = x2d.shape
    y = torch.empty_like(x2d)
    bm = block_m(P)
    launch(_fwht, (cdiv(M, bm),), x2d, y, M, x2d.stride(0), y.stride(0), P ** -0.5,
           P=P, LOG_P=P.bit_length() - 1, BLOCK_M=bm)
    return y


def run(x: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
    """qpass::hadamard on CUDA: the power-of-two factor in the kernel, the small orthogonal `mix` (m × m) as a
    batched matmul over the m axis."""
    n = x.shape[-1]
    m = 1 if mix is None else mix.shape[0]
    p = n // m
    y = fwht_rows(x.reshape(-1, p).contiguous()) if p > 1 else x.reshape(-1, p).clone()
    y = y.reshape(*x.shape[:-1], m, p)
    if mix is not None:
        y = (mix.t().to(y.dtype) @ y)
    return y.reshape(x.shape)
