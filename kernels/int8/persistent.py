"""int8 x int8 GEMM at prefill sizes on Hopper: one program per SM walks the output tiles, TMA brings the operands.

Y[m, n] = (sum_k X[m, k] * W[n, k]) * w_scale[n] (* x_scale[m]) (+ bias[n]): the per-row-step form of
`gemm._int8_mm` (W8A8, and QSM's prompt path after the unpack pass, int8/w4a8.py "unpack"), without zero points or
group steps. The K loop's two operand tiles come through host-made tensor descriptors (TMA: no per-element address
arithmetic, no cp.async; rows and columns past the tensor's edge read as zeros), the program count is the SM count
and each program takes tiles t, t + programs, ... in grouped order (GROUP_M row tiles share a weight tile in L2).
H100, `.gpu/int8_tma_probe.py` (benchmarks/results/int8_tiles_h100_2026-12-07/): 8192^3 876.5 us against the
pointer tile's 968.7 (bf16 1459.2, torch._int_mm 1186.8), 4,096 rows of Llama-3-8B's four GEMMs 10-18 % faster;
at 512-2,048 rows no faster than the pointer tile, so `gemm.int_mm_plan` takes it from PERSISTENT_MIN_M rows.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..runtime import persistent_programs
from ..tiling import cdiv, grouped_tile

PERSISTENT_MIN_M = 2048
CONFIG = dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)


@triton.jit
def _int8_mm_persistent(x_desc, w_desc, ws_ptr, xs_ptr, b_ptr, y_ptr, M, N, K, stride_ym, NPROG,
                        HAS_XS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    tile_out = tl.program_id(0) - NPROG  # the epilogue's own tile counter, as Triton's persistent tutorial keeps it
    for t in tl.range(tl.program_id(0), tiles, NPROG, flatten=True):  # flattened: the next tile's loads overlap
        pid_m, pid_n = grouped_tile(t, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        for ki in range(tl.cdiv(K, BLOCK_K)):
            x = x_desc.load([pid_m * BLOCK_M, ki * BLOCK_K])
            w = w_desc.load([pid_n * BLOCK_N, ki * BLOCK_K])
            acc = tl.dot(x, w.T, acc, out_dtype=tl.int32)
        tile_out += NPROG
        pid_m, pid_n = grouped_tile(tile_out, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_mask, n_mask = offs_m < M, offs_n < N
        y = acc.to(tl.float32) * tl.load(ws_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        if HAS_XS:
            y = y * tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0).to(tl.float32)[:, None]
        if HAS_BIAS:
            y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=m_mask[:, None] & n_mask[None, :])


def persistent_fits(x2, w, M: int, grouped: bool, w_int4: bool, x_zero, w_zero) -> bool:
    """Whether this signature runs `_int8_mm_persistent` on CUDA: per-row steps, int8 weights, no zero points,
    PERSISTENT_MIN_M rows or more on sm_90+, and rows TMA can address (unit stride along K, 16-byte row strides).
    Each call still checks its operands' 16-byte alignment (`aligned`)."""
    return (x2.device.type == "cuda" and M >= PERSISTENT_MIN_M and min(w.shape[0], x2.shape[-1]) > 0
            and not grouped and not w_int4 and x_zero is None and w_zero is None and w.dtype == torch.int8
            and torch.cuda.get_device_capability(x2.device)[0] >= 9 and x2.stride(-1) == 1 and w.stride(-1) == 1
            and x2.stride(0) % 16 == 0 and w.stride(0) % 16 == 0)


def aligned(*tensors) -> bool:
    """TMA's base-address rule: every operand 16-byte aligned."""
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def persistent_plan(M: int, N: int, K: int, stride_xm: int, stride_wn: int, device, has_xs: bool, has_bias: bool,
                    config=None):
    """The launch for M int8 rows of K (row stride stride_xm) times an [N, K] int8 weight (row stride stride_wn), as
    call(x, w, ws, xs, bias, y) with y dense [M, N] in memory: the grid and meta fixed here, the two descriptors made
    per call from the operands' addresses and the strides given here (x may be any view with those rows, e.g. the
    [1, M, K] activations of a plan's `rows_plan`)."""
    cfg = dict(config or CONFIG)
    bm, bn, bk = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N"), cfg.pop("BLOCK_K")
    nprog = persistent_programs(device, cdiv(M, bm) * cdiv(N, bn), 1)
    kernel = _int8_mm_persistent[(nprog,)]

    def call(x, w, ws, xs, bias, y):
        xd = TensorDescriptor(x, [M, K], [stride_xm, 1], [bm, bk])
        wd = TensorDescriptor(w, [N, K], [stride_wn, 1], [bn, bk])
        kernel(xd, wd, ws, xs if xs is not None else ws, bias if bias is not None else ws, y, M, N, K, N, nprog,
               HAS_XS=has_xs, HAS_BIAS=has_bias, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **cfg)
        return y
    return call


def int8_mm_persistent(x2, w, ws, xs, bias, out_dtype, config=None):
    """x2 int8 [M, K] and w int8 [N, K] with unit stride along K, 16-byte aligned rows; ws [N] (fp32), xs [M] or
    None, bias [N] or None -> [M, N] out_dtype (the kernel's direct entry: tests, probes)."""
    M, K = x2.shape
    N = w.shape[0]
    y = torch.empty(M, N, dtype=out_dtype, device=x2.device)
    return persistent_plan(M, N, K, x2.stride(0), w.stride(0), x2.device, xs is not None, bias is not None,
                           config)(x2, w, ws, xs, bias, y)
