"""W4A16 dispatch: fp16/bf16/fp32 activations x int4 weights (formats.pack_int4) with group scales.

Kernel by M (`w4a16_linear_triton`, `kernel=` overrides):
  * "gemv4" (int4/gemv.py): M <= GEMV4_MAX_M with fp16/bf16 x and groups of 32k or per-channel (decode);
  * "gemv2" (int4/gemv2.py): the other M = 1 cases;
  * "tc" (int4/tc.py): 2 <= M < DEQUANT_MIN_M, and every M off CUDA: tensor-core GEMM, int4 unpack in registers,
    split-K at small M (H200, `benchmarks/w4a16_prompt_sweep.py`, Llama-3-8B shapes: 14.9-41.5 us at M = 16,
    18.0-48.3 us at M = 64, 0.71-1.05x bf16, where the previous 3-D-reshape kernel took 29-298 us);
  * "dequant" (int4/dequant.py + cuBLAS): M >= DEQUANT_MIN_M on CUDA (one HBM pass over W, then the bf16 GEMM).
    At M = 128 "tc" is the faster of the two on both GPUs measured: H200 (2026-12-05) 25.3 / 65.7 / 77.9 us vs
    26.3 / 78.1 / 82.0 on the three shapes; H100 (2026-12-07, codes unpacked straight to bf16) 24.9 vs 29.1 us at
    4096x4096 and 77.7 vs 106.3 at 4096x14336. From M = 256 dequant wins (H100: 32.9 vs 43.9, 113.8 vs 147.2 us).
"""
from __future__ import annotations

import torch

from ..checks import check_w4a16
from ..formats import norm_group
from ..tiling import rows, rows_plan
from .dequant import dequantize_int4_plan, dequantize_int4_triton
from .gemv import gemv4_supported, w4a16_gemv4, w4a16_gemv4_plan
from .gemv2 import w4a16_gemv2
from .tc import w4a16_tc, w4a16_tc_plan

GEMV4_MAX_M = 1
DEQUANT_MIN_M = 129
KERNELS = ("gemv4", "gemv2", "dequant", "tc")


def supported_group(K: int, group_size: int) -> bool:
    G = norm_group(K, group_size)
    return G == K or (G % 16 == 0 and (G & (G - 1)) == 0) or G % 256 == 0


def choose_kernel(x2, group_size: int) -> str:
    """The default kernel for x2 [M, K] (see the module docstring)."""
    M, K = x2.shape
    if M <= GEMV4_MAX_M and gemv4_supported(x2, K, group_size):
        return "gemv4"
    if M == 1:
        return "gemv2"
    if M >= DEQUANT_MIN_M and x2.is_cuda:
        return "dequant"
    return "tc"


def w4a16_linear_triton(x, qweight, scales, zeros, bias, group_size: int, config=None, kernel=None):
    """x [..., K] @ dequant(qweight)^T (+ bias); kernel: one of KERNELS (None: `choose_kernel`), config: its
    launch config (None: the shipped one)."""
    check_w4a16(x, qweight, scales, zeros, bias, group_size, op="w4a16_linear_triton")
    torch._check_value(supported_group(x.shape[-1], group_size), lambda: (
        f"w4a16_linear_triton: group_size={group_size} at K={x.shape[-1]} is not supported by the kernels (they "
        f"take the whole row, a power of two >= 16 or a multiple of 256); use int4/reference.w4a16_linear_ref"))
    torch._check_value(kernel is None or kernel in KERNELS, lambda: f"w4a16_linear_triton: kernel must be one of "
                                                                    f"{KERNELS}, got {kernel!r}")
    return run(x, qweight, scales, zeros, bias, group_size, config, kernel)


def plan(x, qweight, scales, zeros, bias, group_size: int):
    """The shipped call for checked arguments of this signature (the op's plan, kernels/checks.py `planned`): the
    decode GEMV, the tensor-core tile and the dequantize pass each bound once; the M = 1 fallback through `run`."""
    x2, as_rows = rows_plan(x)
    kernel = choose_kernel(x2, group_size)
    if kernel == "gemv4" and x.is_contiguous():
        return w4a16_gemv4_plan(x, qweight, scales, zeros, bias, group_size)
    K, N = x.shape[-1], qweight.shape[0]
    if kernel == "dequant":
        dense = dequantize_int4_plan(qweight, scales, zeros, group_size, K, x.dtype)
        return lambda x, qweight, scales, zeros, bias, group_size: torch.nn.functional.linear(
            x, dense(qweight, scales, zeros, None), bias)
    if kernel != "tc":
        return run
    tile = w4a16_tc_plan(x2, qweight, scales, zeros, bias, norm_group(K, group_size), N)
    out_shape, dtype, device = (*x.shape[:-1], N), x.dtype, x.device

    def call(x, qweight, scales, zeros, bias, group_size):
        y = torch.empty(out_shape, dtype=dtype, device=device)  # [M, N] in memory
        return tile(as_rows(x), qweight, scales, zeros, bias, y)
    return call


def run(x, qweight, scales, zeros, bias, group_size: int, config=None, kernel=None):
    """`w4a16_linear_triton` on checked arguments (the op checks once per signature)."""
    K = x.shape[-1]
    x2 = rows(x)
    kernel = kernel or choose_kernel(x2, group_size)
    if kernel == "dequant":
        w = dequantize_int4_triton(qweight, scales, zeros, group_size, K, x.dtype)
        return torch.nn.functional.linear(x, w, bias)
    N = qweight.shape[0]
    y = torch.empty(x2.shape[0], N, dtype=x.dtype, device=x.device)
    if kernel == "gemv4":
        w4a16_gemv4(x2, qweight, scales, zeros, bias, group_size, y, config=config)
    else:
        launch = w4a16_gemv2 if kernel == "gemv2" else w4a16_tc
        launch(x2, qweight, scales, zeros, bias, norm_group(K, group_size), y, config=config)
    return y.reshape(*x.shape[:-1], N)
