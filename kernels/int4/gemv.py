"""Decode GEMV (M small) for W4A16, on the unchanged formats.pack_int4 layout: `_w4a16_gemv4`.

Differences from int4/gemv2.py's _w4a16_gemv2 (the previous M = 1 kernel, now the fallback):
  * Tile [BLOCK_N, NV, 4] words: the last axis (4 consecutive int32 = one 16-byte load per row per thread)
    is explicit, so the partial dot of a thread's 4 words is reduced in registers and one group scale per
    row per 4 words is loaded (needs G % 32 == 0 or per-channel).
  * 2 ALU ops per nibble: "1.0-magic" decode.  A nibble n placed at mantissa bits b..b+3 of 1.0f
    (`(t & (15 << b)) | 0x3F800000`, one LOP3) is the float 1 + n * 2**(b - 23); with x pre-scaled by
    2**(23 - b) (exact) one FFMA adds x' + n*x.  The x' terms (and the +8 offset of signed nibbles) are
    removed by starting the FMA chain at -C, C = sum(x') + 8 * sum(x) per word, computed once per x.
    b in {11, 15, 19} keeps the cancellation to <= 12 bits of fp32's 24 (nibbles 0-2 from w << 11, 3-5 from
    w >> 1, 6-7 from w >> 13: 3 shifts per 8 nibbles).
  * x (pre-scaled, 8 values per word) and C live in registers: loaded once per program when the whole row
    fits one chunk (ONE_CHUNK, KW <= BLOCK_KW), and the program walks row blocks (persistent grid,
    programs = min(row blocks, NPROG)); otherwise x is re-read (L1/L2) per K chunk.
  * M > 1: grid axis 1 over the rows of x (each re-reads W, from L2 for the later rows); M <= 16 only.
Interpreter-safe: plain integer/float ops, no inline asm.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..tiling import cdiv, next_pow2
from ..formats import norm_group
from ..runtime import persistent_programs
from ..launch import TENSOR, bind, output_plan

_XOR8 = tl.constexpr(-2004318072)  # 0x88888888: two's complement nibbles -> offset binary (q + 8)
_ONE = tl.constexpr(1065353216)  # 0x3F800000 = bits of 1.0f
_A11 = tl.constexpr((15 << 11) | 1065353216)
_A15 = tl.constexpr((15 << 15) | 1065353216)
_A19 = tl.constexpr((15 << 19) | 1065353216)


@triton.jit
def _xprep(x_row, widx, K, HAS_ZERO: tl.constexpr):
    # widx: word indices [1, NV, 4]; returns x' for the 8 nibble positions, C and sum(x) per word
    k = widx * 8
    x0 = tl.load(x_row + k + 0, mask=k + 0 < K, other=0.0).to(tl.float32)
    x1 = tl.load(x_row + k + 1, mask=k + 1 < K, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + k + 2, mask=k + 2 < K, other=0.0).to(tl.float32)
    x3 = tl.load(x_row + k + 3, mask=k + 3 < K, other=0.0).to(tl.float32)
    x4 = tl.load(x_row + k + 4, mask=k + 4 < K, other=0.0).to(tl.float32)
    x5 = tl.load(x_row + k + 5, mask=k + 5 < K, other=0.0).to(tl.float32)
    x6 = tl.load(x_row + k + 6, mask=k + 6 < K, other=0.0).to(tl.float32)
    x7 = tl.load(x_row + k + 7, mask=k + 7 < K, other=0.0).to(tl.float32)
    xs = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
    x0 = x0 * 4096.0
    x1 = x1 * 256.0
    x2 = x2 * 16.0
    x3 = x3 * 4096.0
    x4 = x4 * 256.0
    x5 = x5 * 16.0
    x6 = x6 * 4096.0
    x7 = x7 * 256.0
    c = ((x0 + x3) + (x6 + x1)) + ((x4 + x7) + (x2 + x5))
    if not HAS_ZERO:
        c = c + 8.0 * xs
    return x0, x1, x2, x3, x4, x5, x6, x7, c, xs


@triton.jit
def _wdot(words, x0, x1, x2, x3, x4, x5, x6, x7, c):
    # sum_i q_i x_i per word (q = nibble - 8 for signed, the plain nibble for HAS_ZERO: c says which)
    # (t | ONE) & (M | ONE) == (t & M) | ONE: one OR per shifted word, then one AND-immediate per nibble
    t1 = (words << 11) | _ONE
    t2 = (words >> 1) | _ONE
    t3 = (words >> 13) | _ONE
    p = -c + (t1 & _A11).to(tl.float32, bitcast=True) * x0
    p += (t1 & _A15).to(tl.float32, bitcast=True) * x1
    p += (t1 & _A19).to(tl.float32, bitcast=True) * x2
    p += (t2 & _A11).to(tl.float32, bitcast=True) * x3
    p += (t2 & _A15).to(tl.float32, bitcast=True) * x4
    p += (t2 & _A19).to(tl.float32, bitcast=True) * x5
    p += (t3 & _A11).to(tl.float32, bitcast=True) * x6
    p += (t3 & _A15).to(tl.float32, bitcast=True) * x7
    return p


@triton.jit
def _w4a16_gemv4(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, xs_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym, NPROG,
                 GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_XS: tl.constexpr,
                 ONE_CHUNK: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    NV: tl.constexpr = BLOCK_KW // 4
    pid = tl.program_id(0)
    m = tl.program_id(1)
    x_row = x_ptr + m * stride_xm
    offs_r = tl.arange(0, BLOCK_N)
    wv = tl.arange(0, NV)
    widx = (wv[:, None] * 4 + tl.arange(0, 4)[None, :])[None, :, :]  # [1, NV, 4]
    num_rb = tl.cdiv(N, BLOCK_N)
    if ONE_CHUNK:
        wmask_k = widx < KW
        if GW == 0:
            g = wv * 0
        else:
            g = (wv * 4) // GW
        gmask = (wv * 4 < KW)[None, :]
        # register double buffer: the next row block's words/scales are loaded before this one is reduced,
        # and the first block's before the x preparation (programs = min(row blocks, NPROG): pid < num_rb)
        offs_n = pid * BLOCK_N + offs_r
        n_mask = offs_n < N
        words = tl.load(w_ptr + offs_n[:, None, None] * KW + widx, mask=n_mask[:, None, None] & wmask_k, other=0)
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=n_mask[:, None] & gmask, other=0.0)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=n_mask[:, None] & gmask, other=0.0)
        else:
            z = s
        x0, x1, x2, x3, x4, x5, x6, x7, c, xs = _xprep(x_row, widx, K, HAS_ZERO)
        xs4 = tl.sum(xs, axis=2)  # [1, NV]
        for rb in range(pid, num_rb, NPROG):
            offs_n2 = (rb + NPROG) * BLOCK_N + offs_r
            n_mask2 = offs_n2 < N
            words2 = tl.load(w_ptr + offs_n2[:, None, None] * KW + widx, mask=n_mask2[:, None, None] & wmask_k,
                             other=0)
            s2 = tl.load(s_ptr + offs_n2[:, None] * NG + g[None, :], mask=n_mask2[:, None] & gmask, other=0.0)
            if HAS_ZERO:
                z2 = tl.load(z_ptr + offs_n2[:, None] * NG + g[None, :], mask=n_mask2[:, None] & gmask, other=0.0)
            else:
                z2 = s2
            if not HAS_ZERO:
                words = words ^ _XOR8
            p = tl.sum(_wdot(words, x0, x1, x2, x3, x4, x5, x6, x7, c), axis=2)  # [BLOCK_N, NV]
            if HAS_ZERO:
                p = p - z.to(tl.float32) * xs4
            y = tl.sum(s.to(tl.float32) * p, axis=1)
            if HAS_XS:  # W4A8 decode: the row's activation step
                y *= tl.load(xs_ptr + m)
            if HAS_BIAS:
                y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)
            words = words2
            s = s2
            z = z2
            offs_n = offs_n2
            n_mask = n_mask2
    else:
        for rb in range(pid, num_rb, NPROG):
            offs_n = rb * BLOCK_N + offs_r
            n_mask = offs_n < N
            acc = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
            for kw0 in range(0, KW, BLOCK_KW):
                wi = kw0 + widx
                x0, x1, x2, x3, x4, x5, x6, x7, c, xs = _xprep(x_row, wi, K, HAS_ZERO)
                wmask = n_mask[:, None, None] & (wi < KW)
                words = tl.load(w_ptr + offs_n[:, None, None] * KW + wi, mask=wmask, other=0)
                if GW == 0:
                    g = wv * 0
                else:
                    g = (kw0 + wv * 4) // GW
                smask = n_mask[:, None] & (kw0 + wv * 4 < KW)[None, :]
                s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
                if not HAS_ZERO:
                    words = words ^ _XOR8
                p = tl.sum(_wdot(words, x0, x1, x2, x3, x4, x5, x6, x7, c), axis=2)
                if HAS_ZERO:
                    z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
                    p = p - z * tl.sum(xs, axis=2)
                acc += s * p
            y = tl.sum(acc, axis=1)
            if HAS_XS:
                y *= tl.load(xs_ptr + m)
            if HAS_BIAS:
                y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


# BLOCK_KW = words per K chunk (a power of 2 >= KW: ONE_CHUNK, x in registers, when <= GEMV4_MAX_KW).
# Per BLOCK_KW: (BLOCK_N, num_warps, programs per SM) from the H100 sweep (benchmarks/gemm.py --gemv).
# num_warps > BLOCK_KW / 128 puts the extra warps on the row axis.
GEMV4_TABLE = {
    512: (4, 4, 2),
    2048: (2, 16, 1),
}
GEMV4_DEFAULT = (4, None, 2)
GEMV4_MAX_KW = 2048  # K <= 16384 in one chunk
GEMV4_CHUNK = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2)  # K > 8 * MAX_KW: x re-read per chunk


def gemv4_supported(x, K, group_size) -> bool:
    G = norm_group(K, group_size)
    return x.dtype in (torch.float16, torch.bfloat16) and (G >= K or G % 32 == 0)


def gemv4_config(N, KW, block_n=None, num_warps=None, per_sm=None):
    """(launch config, programs per SM) for a [N, KW-word] weight."""
    kw = max(128, next_pow2(KW))
    bn, nw, sm = GEMV4_TABLE.get(kw, GEMV4_DEFAULT)
    if kw > GEMV4_MAX_KW:
        return dict(GEMV4_CHUNK, ONE_CHUNK=False), per_sm or sm
    nw = num_warps or nw or kw // 128
    return dict(BLOCK_N=block_n or bn, BLOCK_KW=kw, num_warps=nw, ONE_CHUNK=True), per_sm or sm


def _nprog(device, N, block_n, per_sm):
    return persistent_programs(device, cdiv(N, block_n), per_sm)


@functools.lru_cache(maxsize=1024)
def _shipped_launch(N: int, KW: int, device: torch.device):
    """(config, programs) of the shipped table for a weight shape: computed once per shape (a decode step makes
    hundreds of these calls; host time is its budget)."""
    cfg, sm = gemv4_config(N, KW)
    return cfg, _nprog(device, N, cfg["BLOCK_N"], sm)


def gemv4_bind(x2, qweight, scales, zeros, bias, group_size: int, y, config=None, nprog=None, per_sm=None,
               x_scale=None):
    """The launch of `_w4a16_gemv4` for arguments with this metadata (shapes, strides, which are given; nothing
    else is read), bound once: call it with `gemv4_tensors(...)`."""
    M, K = x2.shape
    N, KW = qweight.shape[0], qweight.shape[1] // 4
    G = norm_group(K, group_size)
    if config is None and nprog is None and per_sm is None:
        cfg, nprog = _shipped_launch(N, KW, x2.device)
    else:
        cfg, sm = gemv4_config(N, KW)
        cfg = dict(config or cfg)
        if nprog is None:
            nprog = _nprog(x2.device, N, cfg["BLOCK_N"], per_sm or sm)
    return bind(_w4a16_gemv4, (nprog, M), [TENSOR] * 7 + [N, K, KW, scales.shape[1], x2.stride(0), y.stride(0), nprog],
                dict(GW=0 if G >= K else G // 8, HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                     HAS_XS=x_scale is not None, **cfg))


def gemv4_tensors(x2, qweight, scales, zeros, bias, x_scale, y):
    """The tensor arguments of `gemv4_bind`'s launch (an absent one's slot gets the scales: never read)."""
    return (x2, qweight, scales, zeros if zeros is not None else scales,
            bias if bias is not None else scales, x_scale if x_scale is not None else scales, y)


def w4a16_gemv4(x2, qweight, scales, zeros, bias, group_size: int, y, config=None, nprog=None, per_sm=None,
                x_scale=None):
    """x2 [M, K] (fp16/bf16, unit stride; or int8 values with `x_scale` [M] fp32, their step: W4A8 decode)
    -> y [M, N] (preallocated)."""
    gemv4_bind(x2, qweight, scales, zeros, bias, group_size, y, config, nprog, per_sm, x_scale)(
        *gemv4_tensors(x2, qweight, scales, zeros, bias, x_scale, y))


def w4a16_gemv4_plan(x, qweight, scales, zeros, bias, group_size: int):
    """`w4a16_gemv4` for arguments of this signature (x [..., K] contiguous, fp16/bf16) as a call
    `(x, qweight, scales, zeros, bias, group_size) -> y [..., N]`: the output's shape and the bound launch are
    made once, so a decode step's call is one output allocation and the driver launch (issue 20's host budget)."""
    K, N = x.shape[-1], qweight.shape[0]
    M = x.numel() // K
    bound = gemv4_bind(x.view(M, K), qweight, scales, zeros, bias, group_size, torch.empty(M, N, device="meta"))
    return output_plan(bound, (*x.shape[:-1], N), x.dtype, x.device,
                       lambda x, qweight, scales, zeros, bias, group_size, y:
                       gemv4_tensors(x, qweight, scales, zeros, bias, None, y))
