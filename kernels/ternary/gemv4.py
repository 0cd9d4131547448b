"""Decode GEMV (M = 1) for the trit planes with the int4 gemv4 design (int4/gemv.py): `_ternary_gemv4`.

Differences from ternary/gemv.py's _ternary_gemv2 (the fallback for other groups, fp32 x and K > 16384):
  * 2 ALU ops per code: "1.0-magic" decode. A 2-bit code c (= t + 1) placed at mantissa bits b..b+1 of 1.0f is
    the float 1 + c * 2**(b - 23); with x pre-scaled by 2**(23 - b) (exact) one FFMA adds x' + c*x. The x' terms
    and the code offset are removed by starting the chain at -C, C = sum(x') + sum(x) per word. Codes 0-5 come
    from w << 11, 6-11 from w >> 1, 12-15 from w >> 13 (b in 11..21: the cancellation costs <= 12 bits of 24).
  * Both planes share x' (16 values per word), prepared once per program and kept in registers: the program
    holds the whole row (K <= 16 * MAX_KW) and walks row blocks (persistent grid, a register double buffer).
  * Tile [BLOCK_N, NV, 2] words per plane: 2 consecutive words (8 bytes) per row per thread and plane, one
    scale pair per row per 2 words (needs G % 32 == 0 or per-channel).
Interpreter-safe: plain integer/float ops, no inline asm.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..tiling import cdiv, next_pow2
from ..formats import norm_group
from ..launch import TENSOR, bind, output_plan
from ..runtime import persistent_programs

_ONE = tl.constexpr(1065353216)  # 0x3F800000 = bits of 1.0f
_B11 = tl.constexpr((3 << 11) | 1065353216)
_B13 = tl.constexpr((3 << 13) | 1065353216)
_B15 = tl.constexpr((3 << 15) | 1065353216)
_B17 = tl.constexpr((3 << 17) | 1065353216)
_B19 = tl.constexpr((3 << 19) | 1065353216)
_B21 = tl.constexpr((3 << 21) | 1065353216)


@triton.jit
def _x16(x_row, k, K, j: tl.constexpr):
    return tl.load(x_row + k + j, mask=k + j < K, other=0.0).to(tl.float32)


@triton.jit
def _xprep(x_row, widx, K):
    # widx: word indices [1, NV, 2]; returns x' of the 16 code positions and C per word
    k = widx * 16
    x0, x1, x2, x3 = _x16(x_row, k, K, 0), _x16(x_row, k, K, 1), _x16(x_row, k, K, 2), _x16(x_row, k, K, 3)
    x4, x5, x6, x7 = _x16(x_row, k, K, 4), _x16(x_row, k, K, 5), _x16(x_row, k, K, 6), _x16(x_row, k, K, 7)
    x8, x9, x10, x11 = _x16(x_row, k, K, 8), _x16(x_row, k, K, 9), _x16(x_row, k, K, 10), _x16(x_row, k, K, 11)
    x12, x13, x14, x15 = _x16(x_row, k, K, 12), _x16(x_row, k, K, 13), _x16(x_row, k, K, 14), _x16(x_row, k, K, 15)
    xs = (((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))) + (((x8 + x9) + (x10 + x11)) + ((x12 + x13) + (x14 + x15)))
    # x' = x * 2**(23 - b) for the code's bit position b (11, 13, ..., 21 per shifted copy of the word)
    x0, x6, x12 = x0 * 4096.0, x6 * 4096.0, x12 * 4096.0
    x1, x7, x13 = x1 * 1024.0, x7 * 1024.0, x13 * 1024.0
    x2, x8, x14 = x2 * 256.0, x8 * 256.0, x14 * 256.0
    x3, x9, x15 = x3 * 64.0, x9 * 64.0, x15 * 64.0
    x4, x10 = x4 * 16.0, x10 * 16.0
    x5, x11 = x5 * 4.0, x11 * 4.0
    c = ((((x0 + x6) + (x12 + x1)) + ((x7 + x13) + (x2 + x8))) + (((x14 + x3) + (x9 + x15)) + ((x4 + x10) + (x5 + x11))))
    return x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, c + xs


@triton.jit
def _tdot(words, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, c):
    # sum_j t_j x_j of one plane's word (t = code - 1): one OR per shifted copy, one AND + one FFMA per code
    t1 = (words << 11) | _ONE
    t2 = (words >> 1) | _ONE
    t3 = (words >> 13) | _ONE
    p = -c + (t1 & _B11).to(tl.float32, bitcast=True) * x0
    p += (t1 & _B13).to(tl.float32, bitcast=True) * x1
    p += (t1 & _B15).to(tl.float32, bitcast=True) * x2
    p += (t1 & _B17).to(tl.float32, bitcast=True) * x3
    p += (t1 & _B19).to(tl.float32, bitcast=True) * x4
    p += (t1 & _B21).to(tl.float32, bitcast=True) * x5
    p += (t2 & _B11).to(tl.float32, bitcast=True) * x6
    p += (t2 & _B13).to(tl.float32, bitcast=True) * x7
    p += (t2 & _B15).to(tl.float32, bitcast=True) * x8
    p += (t2 & _B17).to(tl.float32, bitcast=True) * x9
    p += (t2 & _B19).to(tl.float32, bitcast=True) * x10
    p += (t2 & _B21).to(tl.float32, bitcast=True) * x11
    p += (t3 & _B11).to(tl.float32, bitcast=True) * x12
    p += (t3 & _B13).to(tl.float32, bitcast=True) * x13
    p += (t3 & _B15).to(tl.float32, bitcast=True) * x14
    p += (t3 & _B17).to(tl.float32, bitcast=True) * x15
    return p


@triton.jit
def _ternary_gemv4(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym, NPROG,
                   GW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    t1_ptr = t1_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    t2_ptr = t2_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    NV: tl.constexpr = BLOCK_KW // 2
    pid = tl.program_id(0)
    m = tl.program_id(1)
    x_row = x_ptr + m * stride_xm
    offs_r = tl.arange(0, BLOCK_N)
    wv = tl.arange(0, NV)
    widx = (wv[:, None] * 2 + tl.arange(0, 2)[None, :])[None, :, :]  # [1, NV, 2]
    wmask_k = widx < KW
    if GW == 0:
        g = wv * 0
    else:
        g = (wv * 2) // GW
    gmask = (wv * 2 < KW)[None, :]
    num_rb = tl.cdiv(N, BLOCK_N)
    # register double buffer: the next row block's words / scales load before this one is reduced, the first
    # block's before x is prepared (programs = min(row blocks, NPROG): pid < num_rb)
    offs_n = pid * BLOCK_N + offs_r
    n_mask = offs_n < N
    wm = n_mask[:, None, None] & wmask_k
    sm = n_mask[:, None] & gmask
    w1 = tl.load(t1_ptr + offs_n[:, None, None] * KW + widx, mask=wm, other=0)
    w2 = tl.load(t2_ptr + offs_n[:, None, None] * KW + widx, mask=wm, other=0)
    a1 = tl.load(a1_ptr + offs_n[:, None] * NG + g[None, :], mask=sm, other=0.0)
    a2 = tl.load(a2_ptr + offs_n[:, None] * NG + g[None, :], mask=sm, other=0.0)
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, c = _xprep(x_row, widx, K)
    for rb in range(pid, num_rb, NPROG):
        offs_n2 = (rb + NPROG) * BLOCK_N + offs_r
        n_mask2 = offs_n2 < N
        wm2 = n_mask2[:, None, None] & wmask_k
        sm2 = n_mask2[:, None] & gmask
        w1n = tl.load(t1_ptr + offs_n2[:, None, None] * KW + widx, mask=wm2, other=0)
        w2n = tl.load(t2_ptr + offs_n2[:, None, None] * KW + widx, mask=wm2, other=0)
        a1n = tl.load(a1_ptr + offs_n2[:, None] * NG + g[None, :], mask=sm2, other=0.0)
        a2n = tl.load(a2_ptr + offs_n2[:, None] * NG + g[None, :], mask=sm2, other=0.0)
        p1 = tl.sum(_tdot(w1, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, c), axis=2)
        p2 = tl.sum(_tdot(w2, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, c), axis=2)
        y = tl.sum(a1.to(tl.float32) * p1 + a2.to(tl.float32) * p2, axis=1)
        if HAS_BIAS:
            y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)
        w1, w2, a1, a2 = w1n, w2n, a1n, a2n
        offs_n = offs_n2
        n_mask = n_mask2


# Per BLOCK_KW (words per row, a power of two): (BLOCK_N, num_warps, programs per SM) — the int4 gemv4 choices
# for the same bytes per thread (int4 K = 4096 is 512 words there, 256 per plane here). Not yet swept on a GPU.
GEMV4_TABLE = {
    256: (4, 4, 2),
    1024: (2, 16, 1),
}
GEMV4_DEFAULT = (4, None, 2)
GEMV4_MAX_KW = 1024  # K <= 16384: the whole row in registers


def gemv4_supported(x, K: int, group_size: int) -> bool:
    """fp16/bf16 x, groups of 32k or per-channel, and the row in one chunk."""
    G = norm_group(K, group_size)
    return (x.dtype in (torch.float16, torch.bfloat16) and (G >= K or G % 32 == 0)
            and cdiv(K, 16) <= GEMV4_MAX_KW)


def gemv4_config(KW: int, block_n=None, num_warps=None, per_sm=None):
    """(launch config, programs per SM) for planes of KW words per row."""
    kw = max(64, next_pow2(KW))
    bn, nw, sm = GEMV4_TABLE.get(kw, GEMV4_DEFAULT)
    nw = num_warps or nw or max(1, kw // 64)
    return dict(BLOCK_N=block_n or bn, BLOCK_KW=kw, num_warps=nw), per_sm or sm


@functools.lru_cache(maxsize=1024)
def _shipped_launch(N: int, KW: int, device: torch.device):
    """(config, programs) of the shipped table for a plane shape, once per shape (host time per decode call)."""
    cfg, per_sm = gemv4_config(KW)
    return cfg, persistent_programs(device, cdiv(N, cfg["BLOCK_N"]), per_sm)


def ternary_gemv4_bind(x2, t1, a1, bias, G: int, y, config=None, nprog=None):
    """The launch of `_ternary_gemv4` for arguments with this metadata (shapes and strides only), bound once: call
    it with `ternary_gemv4_tensors(...)`."""
    M, K = x2.shape
    N, KW = t1.shape[0], t1.shape[1] // 4
    if config is None and nprog is None:
        cfg, nprog = _shipped_launch(N, KW, x2.device)
    else:
        cfg, per_sm = gemv4_config(KW)
        cfg = dict(config or cfg)
        nprog = nprog or persistent_programs(x2.device, cdiv(N, cfg["BLOCK_N"]), per_sm)
    return bind(_ternary_gemv4, (nprog, M), [TENSOR] * 7 + [N, K, KW, a1.shape[1], x2.stride(0), y.stride(0), nprog],
                dict(GW=0 if G >= K else G // 16, HAS_BIAS=bias is not None, **cfg))


def ternary_gemv4_tensors(x2, t1, t2, a1, a2, bias, y):
    """The tensor arguments of `ternary_gemv4_bind`'s launch (no bias: the slot gets a1, never read)."""
    return x2, t1, t2, a1, a2, bias if bias is not None else a1, y


def ternary_gemv4(x2, t1, t2, a1, a2, bias, G: int, y, config=None, nprog=None):
    """x2 [M, K] (fp16/bf16, unit stride) -> y [M, N] (preallocated); G = the normalized group."""
    ternary_gemv4_bind(x2, t1, a1, bias, G, y, config, nprog)(*ternary_gemv4_tensors(x2, t1, t2, a1, a2, bias, y))
    return y


def ternary_gemv4_plan(x, t1, t2, a1, a2, bias, G: int):
    """`ternary_gemv4` for arguments of this signature (x [..., K] contiguous) as a call
    `(x, t1, t2, a1, a2, bias, group_size) -> y [..., N]`, the launch bound once (see int4/gemv.py's plan)."""
    K, N = x.shape[-1], t1.shape[0]
    M = x.numel() // K
    bound = ternary_gemv4_bind(x.view(M, K), t1, a1, bias, G, torch.empty(M, N, device="meta"))
    return output_plan(bound, (*x.shape[:-1], N), x.dtype, x.device,
                       lambda x, t1, t2, a1, a2, bias, group_size, y: ternary_gemv4_tensors(x, t1, t2, a1, a2, bias, y))
