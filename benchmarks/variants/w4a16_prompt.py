"""W4A16 prompt-range candidate (16 <= M <= a few thousand): swap-AB tensor-core GEMM whose int4 unpack is a chain
of `tl.interleave`s (each nibble plane stays in its thread's registers: no 3-D reshape through shared memory), one
group scale (and zero) per weight row per K step (BLOCK_K divides the group), optional split-K (fp32 atomics into
a zeroed buffer, then one cast) for the small-M tiles that leave SMs idle.

Same arguments as qpass.kernels.int4.w4a16.w4a16_linear_triton, plus `config`.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from qpass.kernels.formats import as_words, norm_group
from qpass.kernels.tiling import rows


@triton.jit
def _nibbles(words, HAS_ZERO: tl.constexpr):
    """int32 words [R, C] -> their 8 int4 values [R, 8C] (value i of word c at column 8c + i): plain nibbles
    [0, 15] with zero points, two's complement (sign-extended) without."""
    if HAS_ZERO:
        n0 = words & 15
        n1 = (words >> 4) & 15
        n2 = (words >> 8) & 15
        n3 = (words >> 12) & 15
        n4 = (words >> 16) & 15
        n5 = (words >> 20) & 15
        n6 = (words >> 24) & 15
        n7 = (words >> 28) & 15
    else:
        n0 = (words << 28) >> 28
        n1 = (words << 24) >> 28
        n2 = (words << 20) >> 28
        n3 = (words << 16) >> 28
        n4 = (words << 12) >> 28
        n5 = (words << 8) >> 28
        n6 = (words << 4) >> 28
        n7 = words >> 28
    even = tl.interleave(tl.interleave(n0, n4), tl.interleave(n2, n6))  # n0 n2 n4 n6 per word
    odd = tl.interleave(tl.interleave(n1, n5), tl.interleave(n3, n7))
    return tl.interleave(even, odd)


@triton.jit
def _w4a16_tcj(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, K_SPLIT, stride_xm, stride_ym,
               HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, SWAP: tl.constexpr,
               SCALE_AFTER: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # SWAP: acc[N-tile, M-tile] = W_deq . X^T (the dequantized weight is wgmma's register operand A, x^T the
    # shared one); else acc[M-tile, N-tile] = X . W_deq^T. SCALE_AFTER: the tile's dot runs on the integer values
    # (exact in bf16/fp16) and its group scale multiplies the [N, M] partial product instead of every weight.
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    k_lo = tl.program_id(2) * K_SPLIT
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_lo, min(k_lo + K_SPLIT, K), BLOCK_K):
        wi = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=n_mask[:, None] & (wi < KW)[None, :],
                        other=0)
        g = k0 // G
        s = tl.load(s_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & (k < K)[None, :],
                    other=0.0)
        q = _nibbles(words, HAS_ZERO)
        if SCALE_AFTER:
            w = q.to(x.dtype)
        else:
            wq = q.to(tl.float32)
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
            w = (wq * s[:, None]).to(x.dtype)
        if SWAP:
            if SCALE_AFTER:
                part = tl.dot(w, tl.trans(x))
                if HAS_ZERO:
                    z = tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
                    part -= z[:, None] * tl.sum(x.to(tl.float32), axis=1)[None, :]
                acc += part * s[:, None]
            else:
                acc = tl.dot(w, tl.trans(x), acc)
        else:
            if SCALE_AFTER:
                part = tl.dot(x, tl.trans(w))
                if HAS_ZERO:
                    z = tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
                    part -= tl.sum(x.to(tl.float32), axis=1)[:, None] * z[None, :]
                acc += part * s[None, :]
            else:
                acc = tl.dot(x, tl.trans(w), acc)
    if SWAP:
        y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
        mask = n_mask[:, None] & m_mask[None, :]
    else:
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
        mask = m_mask[:, None] & n_mask[None, :]
    if ATOMIC:
        tl.atomic_add(y_ptrs, acc, mask=mask, sem="relaxed")
    else:
        if HAS_BIAS:
            b = tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            if SWAP:
                acc += b[:, None]
            else:
                acc += b[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def w4a16_tcj(x, qweight, scales, zeros, bias, group_size: int, config: dict):
    """config: BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages."""
    K = x.shape[-1]
    x2 = rows(x)
    M = x2.shape[0]
    words = as_words(qweight)
    N, KW = words.shape
    G = norm_group(K, group_size)
    cfg = dict(config)
    split = cfg.pop("SPLIT_K", 1)
    cfg.setdefault("SWAP", True)
    cfg.setdefault("SCALE_AFTER", False)
    if G < K:
        cfg["BLOCK_K"] = math.gcd(cfg["BLOCK_K"], G)  # a K step never straddles two groups
    bk = cfg["BLOCK_K"]
    k_split = triton.cdiv(triton.cdiv(K, split), bk) * bk
    split = triton.cdiv(K, k_split)
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(M, cfg["BLOCK_M"]), split)
    atomic = split > 1
    y = torch.zeros(M, N, dtype=torch.float32, device=x.device) if atomic else torch.empty(M, N, dtype=x.dtype,
                                                                                               device=x.device)
    _w4a16_tcj[grid](x2, words, scales, z, b, y, M, N, K, KW, scales.shape[1], G, k_split, x2.stride(0), y.stride(0),
                     HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, ATOMIC=atomic, **cfg)
    if atomic:
        y = (y + bias.float()).to(x.dtype) if bias is not None else y.to(x.dtype)
    return y.reshape(*x.shape[:-1], N)
