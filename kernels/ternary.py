"""Ternary trit-plane GEMM: Y = X . (diag(a1) T1 + diag(a2) T2)^T with per-(row, group) scales.

Planes use formats.pack_trits (2 bits per trit, code t + 1, 16 trits per int32 word).  Same two kernels as
W4A16: a CUDA-core GEMV for M = 1 (each 2-bit code OR-ed into the mantissa of 2**23, codes above bit 16
taken from `word >> 16`, x pre-scaled by 4**-j; the +1 code offset is removed per group as sum(x)), and a
swap-AB tensor-core kernel for M >= 2 that builds a1*T1 + a2*T2 in registers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_ternary
from .formats import as_words, norm_group

_MAGIC = tl.constexpr(1258291200)  # bits of 2**23


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
def _ternary_gemv2(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym,
                   GW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # _ternary_gemv with the W4A16 gemv2 tiling: [BLOCK_N, 128 * num_warps] words, each thread all rows x 4
    # consecutive words of both planes (16-byte loads), x shared by the rows in registers; GW = words per group.
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
        if GW == 0:
            g = wi * 0
        else:
            g = wi // GW
        a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
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


@triton.jit
def _ternary_tc(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, stride_xm, stride_ym,
                HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GSUB: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    NSUB: tl.constexpr = BLOCK_K // GSUB
    BKW: tl.constexpr = BLOCK_K // 16
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    offs_kw = tl.arange(0, BKW)
    shifts = tl.arange(0, 16) * 2
    offs_k = tl.arange(0, BLOCK_K)
    offs_sub = tl.arange(0, NSUB)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        wi = k0 // 16 + offs_kw
        wmask = n_mask[:, None] & (wi < KW)[None, :]
        w1 = tl.load(t1_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        w2 = tl.load(t2_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
        c1 = ((w1[:, :, None] >> shifts[None, None, :]) & 3) - 1
        c2 = ((w2[:, :, None] >> shifts[None, None, :]) & 3) - 1
        c1 = tl.reshape(c1.to(tl.float32), [BLOCK_N, NSUB, GSUB])
        c2 = tl.reshape(c2.to(tl.float32), [BLOCK_N, NSUB, GSUB])
        g = (k0 + offs_sub * GSUB) // G
        gmask = n_mask[:, None] & (g < NG)[None, :]
        a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=gmask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=gmask, other=0.0).to(tl.float32)
        w = tl.reshape(c1 * a1[:, :, None] + c2 * a2[:, :, None], [BLOCK_N, BLOCK_K])
        k = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :],
                    mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
        acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


GEMV_KIND = "gemv2"  # "gemv2" (rows x 16-byte words per thread), "gemv" (trit slices) or "gemv3" (3-D)
GEMV_CONFIG = dict(BLOCK_N=32, BLOCK_KW=32, num_warps=4, num_stages=1)
GEMV2_CONFIG = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2, num_stages=1)  # H100 sweep2 winner; BLOCK_KW = 128 * num_warps
GEMV3_CONFIG = dict(BLOCK_N=16, BLOCK_KW=32, num_warps=4, num_stages=1)
TC_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)),
]


def _tc_config(M):
    for max_m, cfg in TC_CONFIGS:
        if M <= max_m:
            return cfg
    return TC_CONFIGS[-1][1]


def supported_group(K: int, group_size: int) -> bool:
    """Groups the ternary kernels compute correctly: the whole row (group_size <= 0 or >= K), a power of two
    >= 16, or a multiple of 256 (the W4A16 rule). Others are wrong or fail: 8 is read as per-channel by the GEMV
    (group = 8 // 16 = 0 words), 24 gives garbage (a group of 1.5 words), 48 passes the GEMV but fails the
    tensor-core kernel's whole-groups-per-tile assertion (M > 1)."""
    G = norm_group(K, group_size)
    return G == K or (G >= 16 and (G & (G - 1)) == 0) or G % 256 == 0


def ternary_linear_triton(x, t1, t2, a1, a2, bias, group_size: int, config=None, kernel=None):
    check_ternary(x, t1, t2, a1, a2, bias, group_size, op="ternary_linear_triton")
    torch._check_value(supported_group(x.shape[-1], group_size), lambda: (
        f"ternary_linear_triton: group_size={group_size} at K={x.shape[-1]} is not supported by the ternary kernels "
        f"(they take the whole row, group_size <= 0, a power of two >= 16 or a multiple of 256); use the reference "
        f"(reference.ternary_linear_ref) for other groups"))
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    N = t1.shape[0]
    w1, w2 = as_words(t1), as_words(t2)
    KW = w1.shape[1]
    G = norm_group(K, group_size)
    NG = a1.shape[1]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    b = bias if bias is not None else a1
    if kernel is None:
        kernel = GEMV_KIND if M == 1 else "tc"
    if kernel == "gemv2":
        cfg = dict(config or GEMV2_CONFIG)
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
        _ternary_gemv2[grid](x2, w1, w2, a1, a2, b, y, N, K, KW, NG, x2.stride(0), y.stride(0),
                             GW=0 if G >= K else G // 16, HAS_BIAS=bias is not None, **cfg)
    elif kernel in ("gemv", "gemv3"):
        cfg = dict(config or (GEMV_CONFIG if kernel == "gemv" else GEMV3_CONFIG))
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), M)
        (_ternary_gemv if kernel == "gemv" else _ternary_gemv3)[grid](x2, w1, w2, a1, a2, b, y, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                            HAS_BIAS=bias is not None, **cfg)
    else:
        cfg = dict(config or _tc_config(M))
        BK = cfg["BLOCK_K"]
        gsub = BK if G >= K else min(G, BK)
        assert BK % gsub == 0 and (G <= BK or G % BK == 0 or G >= K), (G, BK)
        grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(M, cfg["BLOCK_M"]))
        _ternary_tc[grid](x2, w1, w2, a1, a2, b, y, M, N, K, KW, NG, G, x2.stride(0), y.stride(0),
                          HAS_BIAS=bias is not None, GSUB=gsub, **cfg)
    return y.reshape(*x.shape[:-1], N)
