"""W4A16 for 2 <= M < w4a16.DEQUANT_MIN_M: tensor-core GEMM with the int4 unpack in registers.

SWAP ("swap AB", the small-M form): acc[N-tile, M-tile] = W_deq . X^T, so the weight tile fills wgmma's >= 64-row
slot and is its register operand; else acc[M-tile, N-tile] = X . W_deq^T. Each K step lies inside one weight group
(BLOCK_K divides the group), so one scale (and zero) per weight row per step: on every weight value, or
(SCALE_AFTER) on the step's partial product, the dot then running on the exact integer values. SPLIT_K > 1 (small
M: N / BLOCK_N tiles alone leave SMs idle) adds fp32 partial sums into a zeroed buffer with atomics, then casts.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..formats import as_words
from ..launch import launch
from ..tiling import pick, cdiv
from ..runtime import interpreting
from .unpack import nibble_floats, nibbles

# (max M, config), one config per launch (autotune with >= 2 configs breaks the interpreter); H200 sweep,
# benchmarks/w4a16_prompt_sweep.py (results: benchmarks/results/prompt_h200/)
TC_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, SPLIT_K=8, SWAP=True, SCALE_AFTER=True, num_warps=4,
              num_stages=3)),
    (32, dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=128, SPLIT_K=8, SWAP=True, SCALE_AFTER=True, num_warps=4,
              num_stages=3)),
    (64, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, SPLIT_K=4, SWAP=True, SCALE_AFTER=True, num_warps=4,
              num_stages=3)),
    (1 << 62, dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, SWAP=False, SCALE_AFTER=False, num_warps=8,
                   num_stages=3)),
]


@triton.jit
def _w4a16_tc(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, K_SPLIT, stride_xm, stride_ym,
              HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, SWAP: tl.constexpr,
              SCALE_AFTER: tl.constexpr, FLOAT_UNPACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr):
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
        if FLOAT_UNPACK:  # the exact codes straight in x's 16-bit float type
            q = nibble_floats(words, HAS_ZERO, x.dtype)
        else:
            q = nibbles(words, HAS_ZERO)
        if SCALE_AFTER:
            w = q.to(x.dtype)
        elif FLOAT_UNPACK and not HAS_ZERO and s_ptr.dtype.element_ty == x_ptr.dtype.element_ty:
            w = q * s.to(x.dtype)[:, None]  # x's type: one rounding of the exact product, as the fp32 form below
        else:
            wq = q.to(tl.float32)
            if HAS_ZERO:
                wq = wq - tl.load(z_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)[:, None]
            w = (wq * s[:, None]).to(x.dtype)
        if SWAP:
            if SCALE_AFTER:
                part = tl.dot(w, tl.trans(x))
                if HAS_ZERO:  # (q - z) . x = q . x - z * sum(x)
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
    if ATOMIC:  # the launcher adds the bias after the last split
        tl.atomic_add(y_ptrs, acc, mask=mask, sem="relaxed")
    else:
        if HAS_BIAS:
            b = tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            if SWAP:
                acc += b[:, None]
            else:
                acc += b[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def float_unpack(dtype) -> bool:
    """Whether the codes unpack straight to floats (unpack.nibble_floats): fp16 / bf16 activations (bf16 only
    compiled: the interpreter's bf16 arithmetic is wrong)."""
    return dtype == torch.float16 or (dtype == torch.bfloat16 and not interpreting())


def w4a16_tc(x2, qweight, scales, zeros, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group; config: TC_CONFIGS' keys."""
    M, K = x2.shape
    words = as_words(qweight)
    N, KW = words.shape
    cfg = dict(config or pick(TC_CONFIGS, M))
    split = cfg.pop("SPLIT_K", 1)
    cfg.setdefault("SWAP", True)
    cfg.setdefault("SCALE_AFTER", False)
    cfg.setdefault("FLOAT_UNPACK", float_unpack(x2.dtype))
    if G < K:
        cfg["BLOCK_K"] = math.gcd(cfg["BLOCK_K"], G)  # a K step never straddles two groups
    k_split = cdiv(cdiv(K, split), cfg["BLOCK_K"]) * cfg["BLOCK_K"]
    split = cdiv(K, k_split)
    out = torch.zeros(M, N, dtype=torch.float32, device=y.device) if split > 1 else y
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    grid = (cdiv(N, cfg["BLOCK_N"]), cdiv(M, cfg["BLOCK_M"]), split)
    launch(_w4a16_tc, grid, x2, words, scales, z, b, out, M, N, K, KW, scales.shape[1], G, k_split, x2.stride(0),
           out.stride(0), HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, ATOMIC=split > 1, **cfg)
    if split > 1:
        y.copy_(out + bias.float() if bias is not None else out)
    return y
