"""Ternary trit-plane GEMM dispatch: Y = X . (diag(a1) T1 + diag(a2) T2)^T with per-(row, group) scales.

Planes use formats.pack_trits (2 bits per trit, code t + 1, 16 trits per int32 word). Kernel by M
(`ternary_linear_triton`, `kernel=` overrides): at M = 1 "gemv4" (ternary/gemv4.py: fp16/bf16 x, groups of 32k or
per-channel, K <= 16384), else "gemv2" (ternary/gemv.py); "tc" (ternary/tc.py, split-K tensor cores building
a1*T1 + a2*T2 in registers) for 2 <= M < DEQUANT_MIN_M, and every M > 1 off CUDA; "dequant" (ternary/dequant.py +
cuBLAS: the dense weight in one pass, then the bf16 GEMM) from DEQUANT_MIN_M rows on CUDA.
"""
from __future__ import annotations

import torch

from ..checks import check_ternary
from ..formats import norm_group
from ..tiling import rows, rows_plan
from .dequant import dequantize_ternary_triton
from .gemv import ternary_gemv2
from .gemv4 import gemv4_supported, ternary_gemv4, ternary_gemv4_plan
from .tc import ternary_tc, ternary_tc_plan

KERNELS = ("gemv4", "gemv2", "tc", "dequant")
LAUNCHERS = {"gemv4": ternary_gemv4, "gemv2": ternary_gemv2, "tc": ternary_tc}
DEQUANT_MIN_M = 65  # the tile at 64 rows takes 1.7-2.1x W4A16's (H100, 2026-12-07: 28.0 / 85.7 / 91.9 us on
# Llama-3-8B's shapes), so the dequantize pass takes over early; the crossover itself is not swept


def supported_group(K: int, group_size: int) -> bool:
    """Groups the ternary kernels compute correctly: the whole row (group_size <= 0 or >= K), a power of two
    >= 16, or a multiple of 256 (the W4A16 rule). Others are wrong or fail: 8 is read as per-channel by the GEMV
    (group = 8 // 16 = 0 words), 24 gives garbage (a group of 1.5 words), 48 passes the GEMV but fails the
    tensor-core kernel's whole-groups-per-tile assertion (M > 1)."""
    G = norm_group(K, group_size)
    return G == K or (G >= 16 and (G & (G - 1)) == 0) or G % 256 == 0


def ternary_linear_triton(x, t1, t2, a1, a2, bias, group_size: int, config=None, kernel=None):
    """x [..., K] @ (diag(a1) T1 + diag(a2) T2)^T (+ bias); kernel: one of KERNELS (None: `choose_kernel`),
    config: its launch config (None: the shipped one)."""
    check_ternary(x, t1, t2, a1, a2, bias, group_size, op="ternary_linear_triton")
    torch._check_value(supported_group(x.shape[-1], group_size), lambda: (
        f"ternary_linear_triton: group_size={group_size} at K={x.shape[-1]} is not supported by the ternary kernels "
        f"(they take the whole row, group_size <= 0, a power of two >= 16 or a multiple of 256); use the reference "
        f"(ternary/reference.ternary_linear_ref) for other groups"))
    torch._check_value(kernel is None or kernel in KERNELS, lambda: f"ternary_linear_triton: kernel must be one of "
                                                                    f"{KERNELS}, got {kernel!r}")
    torch._check_value(kernel != "gemv4" or gemv4_supported(x, x.shape[-1], group_size), lambda: (
        f"ternary_linear_triton: kernel 'gemv4' takes fp16/bf16 x, groups of 32k or per-channel and K <= 16384"))
    return run(x, t1, t2, a1, a2, bias, group_size, config, kernel)


def choose_kernel(x2, group_size: int) -> str:
    """The default kernel for x2 [M, K] (see the module docstring)."""
    M, K = x2.shape
    if M >= DEQUANT_MIN_M and x2.is_cuda:
        return "dequant"
    if M > 1:
        return "tc"
    return "gemv4" if gemv4_supported(x2, K, group_size) else "gemv2"


def plan(x, t1, t2, a1, a2, bias, group_size: int):
    """The shipped call for checked arguments of this signature (the op's plan, kernels/checks.py `planned`): the
    M = 1 GEMV and the tensor-core tile bound once, the other kernels through `run`."""
    x2, as_rows = rows_plan(x)
    kernel = choose_kernel(x2, group_size)
    if kernel == "gemv4" and x.is_contiguous():
        return ternary_gemv4_plan(x, t1, t2, a1, a2, bias, norm_group(x.shape[-1], group_size))
    if kernel != "tc":
        return run
    N = t1.shape[0]
    tile = ternary_tc_plan(x2, t1, t2, a1, a2, bias, norm_group(x.shape[-1], group_size), N)
    out_shape, dtype, device = (*x.shape[:-1], N), x.dtype, x.device

    def call(x, t1, t2, a1, a2, bias, group_size):
        y = torch.empty(out_shape, dtype=dtype, device=device)  # [M, N] in memory
        return tile(as_rows(x), (t1, t2, a1, a2), bias, y)
    return call


def run(x, t1, t2, a1, a2, bias, group_size: int, config=None, kernel=None):
    """`ternary_linear_triton` on checked arguments (the op checks once per signature)."""
    K = x.shape[-1]
    x2 = rows(x)
    M, N = x2.shape[0], t1.shape[0]
    kernel = kernel or choose_kernel(x2, group_size)
    if kernel == "dequant":
        w = dequantize_ternary_triton(t1, t2, a1, a2, norm_group(K, group_size), K, x.dtype)
        return torch.nn.functional.linear(x, w, bias)
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    LAUNCHERS[kernel](x2, t1, t2, a1, a2, bias, norm_group(K, group_size), y, config=config)
    return y.reshape(*x.shape[:-1], N)
