"""Ternary GEMV kernels that lost to the shipped one (qpass.kernels.ternary.gemv, "gemv2"); kept for
benchmarks/gemm.py's sweeps.

  * "gemv": trit slices, [BLOCK_N, BLOCK_KW] words per program, one scale per word.
  * "gemv3": 3-D [rows, words, trits] tile, x loaded as contiguous [words, 16].
Same arguments as qpass.kernels.ternary.ternary.ternary_linear_triton, plus `kernel`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qpass.kernels.checks import check_ternary
from qpass.kernels.formats import as_words, norm_group
from qpass.kernels.tiling import rows, split_launch

_MAGIC = tl.constexpr(1258291200)  # bits of 2**23

GEMV_CONFIG = dict(BLOCK_N=32, BLOCK_KW=32, num_warps=4, num_stages=1)
GEMV3_CONFIG = dict(BLOCK_N=16, BLOCK_KW=32, num_warps=4, num_stages=1)
KERNELS = ("gemv", "gemv3")


@triton.jit
def _ternary_gemv(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                  HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
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
        g = (wi * 16) // G  # each word lies in one group (G % 16 == 0 or per-channel)
        smask = wmask & (g < NG)[None, :]
        a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
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


@triton.jit
def _ternary_gemv3(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                   HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # 3-D variant: [rows, words, trits]; x loaded as contiguous [words, 16]
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    offs_j = tl.arange(0, 16)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        w1 = tl.load(t1_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        w2 = tl.load(t2_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        g = (wi * 16) // G
        smask = wmask & (g < NG)[None, :]
        a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        sh = (offs_j * 2)[None, None, :]
        # a1*t1 + a2*t2 per trit with t = code - 1; codes as exact floats via the 2**23 mantissa trick
        f1 = (((w1[:, :, None] >> sh) & 3) | _MAGIC).to(tl.float32, bitcast=True) - 8388609.0
        f2 = (((w2[:, :, None] >> sh) & 3) | _MAGIC).to(tl.float32, bitcast=True) - 8388609.0
        wv = f1 * a1[:, :, None] + f2 * a2[:, :, None]
        k = (wi * 16)[:, None] + offs_j[None, :]
        x2 = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
        acc += tl.sum(wv * x2[None, :, :], axis=2)
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)



def ternary_variant(x, t1, t2, a1, a2, bias, group_size: int, kernel: str, config=None):
    """One of KERNELS on x [..., K] (CUDA, or the Triton interpreter)."""
    check_ternary(x, t1, t2, a1, a2, bias, group_size, op="ternary_variant")
    assert kernel in KERNELS, kernel
    K = x.shape[-1]
    x2 = rows(x)
    M = x2.shape[0]
    N = t1.shape[0]
    w1, w2 = as_words(t1), as_words(t2)
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    b = bias if bias is not None else a1
    cfg = dict(config or (GEMV_CONFIG if kernel == "gemv" else GEMV3_CONFIG))
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
    (_ternary_gemv if kernel == "gemv" else _ternary_gemv3)[grid](
        x2, w1, w2, a1, a2, b, y, N, K, w1.shape[1], a1.shape[1], norm_group(K, group_size), x2.stride(0),
        y.stride(0), HAS_BIAS=bias is not None, **cfg)
    return y.reshape(*x.shape[:-1], N)


def shipped_configs():
    """The variants' default configs, for the sm_90 compile check (tests/kernels/test_compile_sm90.py)."""
    out = []
    for dt in ("*fp16", "*bf16"):
        tsig = dict(x_ptr=dt, t1_ptr="*i32", t2_ptr="*i32", a1_ptr=dt, a2_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32",
                    K="i32", KW="i32", NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        c, o = split_launch(GEMV_CONFIG)
        out.append((f"ternary_gemv[{dt}]", _ternary_gemv, tsig, {"HAS_BIAS": True, **c}, o))
        c, o = split_launch(GEMV3_CONFIG)
        out.append((f"ternary_gemv3[{dt}]", _ternary_gemv3, tsig, {"HAS_BIAS": True, **c}, o))
    return out
