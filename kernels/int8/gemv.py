"""W4A8 / W4A4 decode GEMV on integer dot products (`w4a8_gemv_dp4a`), on the unchanged formats.pack_int4 layout.

y[m, n] = xs[m] · Σ_g s[n, g] · Σ_{k in g} (q[n, k] − z[n, g]) · x[m, k]   (+ bias)

The W4A16 GEMV (int4/gemv.py) turns every nibble into an fp32 and multiplies it in an FMA: about 20 ALU
instructions per 32-bit word of weights, close to what an SM issues while HBM streams at full speed, so decode
reads W at under half the copy bandwidth. With int8 activations the product is integer. Per word, two masks split
its 8 nibbles into the bytes of two int32 (nibbles 0, 2, 4, 6 and 1, 3, 5, 7) and two `dp4a` (four u8 × s8
products summed into an int32) finish it, against x packed the same way once per program: 5 instructions a word.
Nibbles are read unsigned: signed codes are flipped to offset binary (q + 8) and 8·Σx taken off, zero points take
off z·Σx; Σx and the corrections are per 32 columns (4 words), so group sizes are multiples of 32 or one per row.
Integer partial sums are exact (|Σ| ≤ 32 · 15 · 128 per 4 words), converted to fp32 once per 4 words.

Batched decode (a few x rows): a program takes ROWS rows of x at once, so each weight word is loaded and split
once and meets every row in two `dp4a`s; before, each row's program re-read W (from L2) and re-split it. Row
blocks of ROWS run on the grid's second axis.

On NVIDIA GPUs `dp4a` is the PTX instruction; in Triton's interpreter (CPU tests) and on ROCm it is spelled out
in integer ops with the same int32 results. Activation zero points (x_zero) are not taken: w4a8.py keeps the fp32 GEMV for them.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..formats import norm_group
from ..launch import TENSOR, bind
from ..runtime import interpreting, persistent_programs
from ..tiling import cdiv, next_pow2

_XOR8 = tl.constexpr(-2004318072)  # 0x88888888: two's complement nibbles -> offset binary (q + 8)
_LOW4 = tl.constexpr(0x0F0F0F0F)


@triton.jit
def _dp4a(a, b, c, HW: tl.constexpr):
    """c + Σ_i byte_i(a) (unsigned) · byte_i(b) (signed), per int32 element."""
    if HW:
        return tl.inline_asm_elementwise("dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c], dtype=tl.int32,
                                         is_pure=True, pack=1)
    else:
        c += (a & 255) * ((b << 24) >> 24)
        c += ((a >> 8) & 255) * ((b << 16) >> 24)
        c += ((a >> 16) & 255) * ((b << 8) >> 24)
        c += ((a >> 24) & 255) * (b >> 24)
        return c


@triton.jit
def _xpack(x_ptr, offs_m, m_mask, stride_xm, widx, K):
    """Rows `offs_m` of x, their 8 values under each word index of `widx` [1, 1, NV, 4] as two int32 of 4 bytes
    (even, odd positions) and Σx per 4 words: [ROWS, 1, NV, 4], [ROWS, 1, NV, 4], [ROWS, 1, NV]."""
    row = x_ptr + offs_m[:, None, None, None] * stride_xm
    rm = m_mask[:, None, None, None]
    k = widx * 8
    x0 = tl.load(row + k + 0, mask=rm & (k + 0 < K), other=0).to(tl.int32)
    x1 = tl.load(row + k + 1, mask=rm & (k + 1 < K), other=0).to(tl.int32)
    x2 = tl.load(row + k + 2, mask=rm & (k + 2 < K), other=0).to(tl.int32)
    x3 = tl.load(row + k + 3, mask=rm & (k + 3 < K), other=0).to(tl.int32)
    x4 = tl.load(row + k + 4, mask=rm & (k + 4 < K), other=0).to(tl.int32)
    x5 = tl.load(row + k + 5, mask=rm & (k + 5 < K), other=0).to(tl.int32)
    x6 = tl.load(row + k + 6, mask=rm & (k + 6 < K), other=0).to(tl.int32)
    x7 = tl.load(row + k + 7, mask=rm & (k + 7 < K), other=0).to(tl.int32)
    even = (x0 & 255) | ((x2 & 255) << 8) | ((x4 & 255) << 16) | (x6 << 24)
    odd = (x1 & 255) | ((x3 & 255) << 8) | ((x5 & 255) << 16) | (x7 << 24)
    xsum = tl.sum(((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)), axis=3)
    return even, odd, xsum


@triton.jit
def _block(words, s, z, even, odd, xsum, HAS_ZERO: tl.constexpr, HW: tl.constexpr, ROWS: tl.constexpr,
           BLOCK_N: tl.constexpr, NV: tl.constexpr):
    """Σ over a [1, BLOCK_N, NV, 4] tile of words against ROWS rows of x: [ROWS, BLOCK_N] fp32, each 4-word partial
    scaled by its group's step. The words are decoded once for all rows."""
    if not HAS_ZERO:
        words = words ^ _XOR8
    lo = words & _LOW4
    hi = (words >> 4) & _LOW4
    p = _dp4a(lo, even, _dp4a(hi, odd, tl.zeros([ROWS, BLOCK_N, NV, 4], dtype=tl.int32), HW), HW)
    d = tl.sum(p, axis=3).to(tl.float32)  # [ROWS, BLOCK_N, NV]
    if HAS_ZERO:
        d -= z.to(tl.float32)[None, :, :] * xsum.to(tl.float32)
    else:
        d -= 8.0 * xsum.to(tl.float32)
    return tl.sum(s.to(tl.float32)[None, :, :] * d, axis=2)


@triton.jit
def _store_rows(y, offs_m, m_mask, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS: tl.constexpr,
                HAS_XS: tl.constexpr):
    """Rows `offs_m` of the outputs [ROWS, BLOCK_N]: times each row's activation step, plus the bias, in the
    output dtype."""
    if HAS_XS:
        y *= tl.load(xs_ptr + offs_m, mask=m_mask, other=0.0)[:, None]
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], y.to(y_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _w4a8_gemv_dp4a(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, xs_ptr, y_ptr, M, N, K, KW, NG, stride_xm, stride_ym, NPROG,
                    GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_XS: tl.constexpr,
                    ONE_CHUNK: tl.constexpr, HW: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_KW: tl.constexpr):
    """Program (pid, mb): x rows mb·ROWS .. +ROWS against weight row blocks pid, pid + NPROG, ... (persistent)."""
    w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    NV: tl.constexpr = BLOCK_KW // 4
    pid = tl.program_id(0)
    offs_m = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    m_mask = offs_m < M
    offs_r = tl.arange(0, BLOCK_N)
    wv = tl.arange(0, NV)
    widx = (wv[:, None] * 4 + tl.arange(0, 4)[None, :])[None, None, :, :]  # [1, 1, NV, 4]
    num_rb = tl.cdiv(N, BLOCK_N)
    if ONE_CHUNK:  # x packed once per program, kept in registers; the next row block's words loaded ahead
        even, odd, xsum = _xpack(x_ptr, offs_m, m_mask, stride_xm, widx, K)
        wmask_k = widx < KW
        g = wv * 0 if GW == 0 else (wv * 4) // GW
        gmask = (wv * 4 < KW)[None, :]
        offs_n = pid * BLOCK_N + offs_r
        n_mask = offs_n < N
        words = tl.load(w_ptr + offs_n[None, :, None, None] * KW + widx,
                        mask=n_mask[None, :, None, None] & wmask_k, other=0)
        for rb in range(pid, num_rb, NPROG):
            offs_n2 = (rb + NPROG) * BLOCK_N + offs_r
            n_mask2 = offs_n2 < N
            words2 = tl.load(w_ptr + offs_n2[None, :, None, None] * KW + widx,
                             mask=n_mask2[None, :, None, None] & wmask_k, other=0)
            sidx = offs_n[:, None] * NG + g[None, :]
            smask = n_mask[:, None] & gmask
            s = tl.load(s_ptr + sidx, mask=smask, other=0.0)
            z = tl.load(z_ptr + sidx, mask=smask, other=0.0) if HAS_ZERO else s
            y = _block(words, s, z, even, odd, xsum, HAS_ZERO, HW, ROWS, BLOCK_N, NV)
            _store_rows(y, offs_m, m_mask, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
            words = words2
            offs_n = offs_n2
            n_mask = n_mask2
    else:  # long K: x re-packed per chunk (from L1/L2)
        for rb in range(pid, num_rb, NPROG):
            offs_n = rb * BLOCK_N + offs_r
            n_mask = offs_n < N
            y = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
            for kw0 in range(0, KW, BLOCK_KW):
                wi = kw0 + widx
                even, odd, xsum = _xpack(x_ptr, offs_m, m_mask, stride_xm, wi, K)
                words = tl.load(w_ptr + offs_n[None, :, None, None] * KW + wi,
                                mask=n_mask[None, :, None, None] & (wi < KW), other=0)
                g = wv * 0 if GW == 0 else (kw0 + wv * 4) // GW
                sidx = offs_n[:, None] * NG + g[None, :]
                smask = n_mask[:, None] & (kw0 + wv * 4 < KW)[None, :]
                s = tl.load(s_ptr + sidx, mask=smask, other=0.0)
                z = tl.load(z_ptr + sidx, mask=smask, other=0.0) if HAS_ZERO else s
                y += _block(words, s, z, even, odd, xsum, HAS_ZERO, HW, ROWS, BLOCK_N, NV)
            _store_rows(y, offs_m, m_mask, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)


# One x row per program (decode): BLOCK_KW (words per K chunk, a power of 2 >= KW up to MAX_KW) -> (BLOCK_N,
# num_warps, programs per SM): the fastest summed over Llama-3-8B's shapes, g64 with and without zero points (H100,
# `benchmarks/w4a8_gemv.py --sweep 1`)
DP4A_TABLE = {
    512: (4, 8, 4),
    2048: (2, 16, 2),
}
DP4A_DEFAULT = (4, None, 4)
DP4A_MAX_KW = 2048  # K <= 16384 in one chunk
DP4A_CHUNK = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2)
# Several x rows per program (batched decode: each weight word split once for ROWS rows): (ROWS, BLOCK_KW) ->
# launch config, programs per SM; the fastest of .gpu/dp4a_rows_probe.py's sweep (H100, g64 with zero points, on
# 28672 x 4096 and 4096 x 14336). Past K = 16384 x is re-packed per chunk. At 8 rows the dp4a issue rate binds and
# the tensor-core tile is faster (w4a8.py GEMV_MAX_M), so blocks stop at 4 rows.
MAX_ROWS = 4
DP4A_ROWS_TABLE = {
    (2, 512): (dict(BLOCK_N=4, BLOCK_KW=512, num_warps=4, ONE_CHUNK=True), 4),
    (4, 512): (dict(BLOCK_N=4, BLOCK_KW=512, num_warps=4, ONE_CHUNK=True), 2),
    (2, 2048): (dict(BLOCK_N=4, BLOCK_KW=2048, num_warps=16, ONE_CHUNK=True), 1),
    (4, 2048): (dict(BLOCK_N=2, BLOCK_KW=2048, num_warps=16, ONE_CHUNK=True), 1),
}
DP4A_ROWS_CHUNK = (dict(BLOCK_N=16, BLOCK_KW=128, num_warps=4, ONE_CHUNK=False), 4)


def rows_per_program(M: int) -> int:
    """x rows per program: all of M (a power of 2) up to MAX_ROWS, then blocks of MAX_ROWS."""
    return min(next_pow2(M), MAX_ROWS)


def dp4a_config(KW: int, rows: int = 1):
    """(launch config, programs per SM) for a weight of KW words per row and `rows` x rows per program."""
    kw = max(128, next_pow2(KW))
    if rows > 1:
        cfg, sm = DP4A_ROWS_TABLE.get((rows, kw), DP4A_ROWS_CHUNK)
    elif kw > DP4A_MAX_KW:
        cfg, sm = dict(DP4A_CHUNK, ONE_CHUNK=False), DP4A_DEFAULT[2]
    else:
        bn, nw, sm = DP4A_TABLE.get(kw, DP4A_DEFAULT)
        cfg = dict(BLOCK_N=bn, BLOCK_KW=kw, num_warps=nw or kw // 128, ONE_CHUNK=True)
    return dict(cfg, ROWS=rows), sm


def _programs(device, N, row_blocks, block_n, per_sm):
    """Programs per block of x rows: the grid's second axis runs the row blocks, which share the SM budget."""
    return persistent_programs(device, cdiv(N, block_n), max(1, per_sm // row_blocks))


@functools.lru_cache(maxsize=1024)
def _shipped_launch(N: int, KW: int, M: int, device: torch.device):
    """(config, programs) of the shipped table for a weight shape, once per shape (host time is decode's budget)."""
    cfg, sm = dp4a_config(KW, rows_per_program(M))
    return cfg, _programs(device, N, cdiv(M, cfg["ROWS"]), cfg["BLOCK_N"], sm)


def dp4a_bind(x2, qweight, scales, zeros, bias, group_size: int, y, x_scale=None, config=None, per_sm=None):
    """The launch of `_w4a8_gemv_dp4a` for arguments with this metadata (shapes, strides, which are given), bound
    once: call it with `dp4a_tensors(...)`. config: keys of `dp4a_config`'s (ROWS among them) to override."""
    M, K = x2.shape
    N, KW = qweight.shape[0], qweight.shape[1] // 4
    G = norm_group(K, group_size)
    if config is None and per_sm is None:
        cfg, nprog = _shipped_launch(N, KW, M, x2.device)
    else:
        rows = (config or {}).get("ROWS", rows_per_program(M))
        cfg, sm = dp4a_config(KW, rows)
        cfg = dict(cfg, **(config or {}))
        nprog = _programs(x2.device, N, cdiv(M, rows), cfg["BLOCK_N"], per_sm or sm)
    NG = scales.shape[1] if scales.dim() == 2 else 1
    return bind(_w4a8_gemv_dp4a, (nprog, cdiv(M, cfg["ROWS"])),
                [TENSOR] * 7 + [M, N, K, KW, NG, x2.stride(0), y.stride(0), nprog],
                dict(GW=0 if G >= K else G // 8, HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                     HAS_XS=x_scale is not None, HW=not interpreting() and torch.version.hip is None, **cfg))


def dp4a_tensors(x2, qweight, scales, zeros, bias, x_scale, y):
    """The tensor arguments of `dp4a_bind`'s launch (an absent one's slot gets the scales: never read)."""
    return (x2, qweight, scales, zeros if zeros is not None else scales,
            bias if bias is not None else scales, x_scale if x_scale is not None else scales, y)


def w4a8_gemv_dp4a(x2, qweight, scales, zeros, bias, group_size: int, y, x_scale=None, config=None, per_sm=None):
    """x2 [M, K] int8 (unit stride), qweight pack_int4 [N, K] (plain nibbles with `zeros`, else signed), scales
    (and zeros) [N, groups] of any float dtype, group_size a multiple of 32 (or >= K: one per row), x_scale [M]
    fp32 or None -> y [M, N] (preallocated, the output dtype)."""
    dp4a_bind(x2, qweight, scales, zeros, bias, group_size, y, x_scale, config, per_sm)(
        *dp4a_tensors(x2, qweight, scales, zeros, bias, x_scale, y))
    return y
