"""W4A16 kernels that lost to the shipped ones (kept for benchmarks/gemm.py's sweeps and comparisons).

  * "gemv": nibble slices, one scale per word ([BLOCK_N, BLOCK_KW] words per program); lost to int4/gemv2.py
    and then int4/gemv.py (gemv4) at M = 1.
  * "gemv3": 3-D [rows, words, nibbles] tile, x loaded as contiguous [words, 8].
  * "mm": prefill GEMM with the int4 unpack fused into the K loop (UNPACK 0: 3-D reshape, 1: per-element word
    re-read); lost to dequantize-once + cuBLAS (H100 sweep2, M = 2048: 830 us at best vs 553 us).
Same arguments as qpass.kernels.int4.w4a16.w4a16_linear_triton, plus `kernel`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qpass.kernels.checks import check_w4a16
from qpass.kernels.formats import as_words, norm_group
from qpass.kernels.tiling import grouped_tile, rows, split_launch

_XOR8 = tl.constexpr(-2004318072)  # 0x88888888 as int32
_MAGIC = tl.constexpr(1258291200)  # 0x4B000000 = bits of 2**23

GEMV_CONFIG = dict(BLOCK_N=8, BLOCK_KW=128, num_warps=4, num_stages=1)
GEMV3_CONFIG = dict(BLOCK_N=16, BLOCK_KW=64, num_warps=4, num_stages=1)
MM_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, UNPACK=0, num_warps=4, num_stages=4)
KERNELS = ("gemv", "gemv3", "mm")


@triton.jit
def _w4a16_gemv(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
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
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if not HAS_ZERO:
            words = words ^ _XOR8  # two's complement -> offset binary (q + 8)
        # every word lies inside one group (G % 8 == 0 or per-channel): one scale per word
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        hi = words >> 16
        p = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
        xs = tl.zeros([BLOCK_KW], dtype=tl.float32)
        for i in tl.static_range(8):
            k = wi * 8 + i
            xv = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            xs += xv
            if i < 4:
                v = (words & (15 << (4 * i))) | _MAGIC
            else:
                v = (hi & (15 << (4 * (i - 4)))) | _MAGIC
            f = v.to(tl.float32, bitcast=True) - 8388608.0  # = nibble * 16**(i % 4), exact
            p += f * (xv * (1.0 / (16 ** (i % 4))))[None, :]
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _w4a16_gemv3(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, G, stride_xm, stride_ym,
                 HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # 3-D variant: [rows, words, nibbles]; x is loaded as contiguous [words, 8] (16-byte vectors)
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_w = tl.arange(0, BLOCK_KW)
    offs_i = tl.arange(0, 8)
    acc = tl.zeros([BLOCK_N, BLOCK_KW], dtype=tl.float32)
    x_row = x_ptr + m * stride_xm
    for kw0 in range(0, KW, BLOCK_KW):
        wi = kw0 + offs_w
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        if not HAS_ZERO:
            words = words ^ _XOR8
        nib = ((words[:, :, None] >> (offs_i * 4)[None, None, :]) & 15) | _MAGIC
        f = nib.to(tl.float32, bitcast=True) - 8388608.0
        k = (wi * 8)[:, None] + offs_i[None, :]
        x2 = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
        p = tl.sum(f * x2[None, :, :], axis=2)
        xs = tl.sum(x2, axis=1)
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _w4a16_mm(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
              HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, SCALAR_G: tl.constexpr, UNPACK: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    # Prefill: acc[M-tile, N-tile] = X . W_deq^T with the int4 unpack fused into the K loop (no dequantized
    # copy of W in HBM).  UNPACK 0: load [BLOCK_N, BLOCK_K / 8] words and split nibbles with a 3-D reshape;
    # UNPACK 1: load the word of every (n, k) (8x re-read, served by L1) and shift by 4 * (k % 8): no reshape.
    # SCALAR_G: BLOCK_K divides the group, so one scale (and zero) per row per K step.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    BKW: tl.constexpr = BLOCK_K // 8
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
        if UNPACK == 0:
            wi = k0 // 8 + tl.arange(0, BKW)
            words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :],
                            mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
            sh = tl.arange(0, 8) * 4
            if HAS_ZERO:
                q = tl.reshape((words[:, :, None] >> sh[None, None, :]) & 15, [BLOCK_N, BLOCK_K])
            else:
                q = tl.reshape((words[:, :, None] << (28 - sh)[None, None, :]) >> 28, [BLOCK_N, BLOCK_K])
        else:
            wv = tl.load(w_ptr + offs_n[:, None] * KW + (k // 8)[None, :],
                         mask=n_mask[:, None] & (k < K)[None, :], other=0)
            if HAS_ZERO:
                q = (wv >> ((k % 8) * 4)[None, :]) & 15
            else:
                q = (wv << (28 - (k % 8) * 4)[None, :]) >> 28
        wq = q.to(tl.float32)
        if SCALAR_G:
            g = k0 // G
            s = tl.load(s_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        else:
            gk = k // G
            gmask = n_mask[:, None] & (k < K)[None, :]
            s = tl.load(s_ptr + offs_n[:, None] * NG + gk[None, :], mask=gmask, other=0.0).to(tl.float32)
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n[:, None] * NG + gk[None, :], mask=gmask, other=0.0).to(tl.float32)
        w = (wq * s).to(x.dtype)
        acc = tl.dot(x, tl.trans(w), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])



def w4a16_variant(x, qweight, scales, zeros, bias, group_size: int, kernel: str, config=None):
    """One of KERNELS on x [..., K] (CUDA, or the Triton interpreter)."""
    check_w4a16(x, qweight, scales, zeros, bias, group_size, op="w4a16_variant")
    assert kernel in KERNELS, kernel
    K = x.shape[-1]
    x2 = rows(x)
    M = x2.shape[0]
    N = qweight.shape[0]
    words = as_words(qweight)
    KW = words.shape[1]
    G = norm_group(K, group_size)
    NG = scales.shape[1]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    if kernel == "mm":
        cfg = dict(config or MM_CONFIG)
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
        _w4a16_mm[grid](x2, words, scales, z, b, y, M, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                        HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                        SCALAR_G=G >= K or G % cfg["BLOCK_K"] == 0, **cfg)
    else:
        cfg = dict(config or (GEMV_CONFIG if kernel == "gemv" else GEMV3_CONFIG))
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
        (_w4a16_gemv if kernel == "gemv" else _w4a16_gemv3)[grid](
            x2, words, scales, z, b, y, N, K, KW, NG, G, x2.stride(0), y.stride(0),
            HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, **cfg)
    return y.reshape(*x.shape[:-1], N)


def shipped_configs():
    """The variants' default configs, for the sm_90 compile check (tests/kernels/test_compile_sm90.py)."""
    out = []
    for dt in ("*fp16", "*bf16"):
        flags = dict(HAS_ZERO=False, HAS_BIAS=False)
        sig = dict(x_ptr=dt, w_ptr="*i32", s_ptr=dt, z_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32", K="i32", KW="i32",
                   NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        c, o = split_launch(GEMV_CONFIG)
        out.append((f"w4a16_gemv[{dt}]", _w4a16_gemv, sig, {**flags, **c}, o))
        out.append((f"w4a16_gemv_zero[{dt}]", _w4a16_gemv, sig, {**flags, "HAS_ZERO": True, **c}, o))
        c, o = split_launch(GEMV3_CONFIG)
        out.append((f"w4a16_gemv3[{dt}]", _w4a16_gemv3, sig, {**flags, **c}, o))
        c, o = split_launch(MM_CONFIG)
        out.append((f"w4a16_mm[{dt}]", _w4a16_mm, dict(sig, M="i32"), {**flags, "SCALAR_G": True, **c}, o))
    return out
