"""Packed int4 -> dense weight in one HBM pass: float (q - z) * s (W4A16 prefill: dequantize once, then cuBLAS) or
the int8 values (W4A8 prefill: unpack once, then the int8 GEMM); with integer group steps (each group's step s = the
row's step r times an integer u, numerics.integer_group_steps) the int8 values (q - z) * u, so one int8 GEMM with
the row steps runs over all of K."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..tiling import cdiv
from ..formats import assert_words, norm_group
from ..launch import TENSOR, bind

DEQUANT_CONFIG = dict(BLOCK_N=32, BLOCK_KW=32, num_warps=4)  # 2-D kernel (K % 8 != 0)
DEQUANT_FLAT_CONFIG = dict(BLOCK_W=512, num_warps=4)  # flat kernel (K % 8 == 0)


@triton.jit
def _int4_dequant(w_ptr, s_ptr, z_ptr, r_ptr, o_ptr, N, K, KW, NG, G, HAS_ZERO: tl.constexpr, INT_OUT: tl.constexpr,
                  STEPS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    # one HBM pass: packed int4 [N, KW] -> dense [N, K] (float (q - z) * s, or the int8 values if INT_OUT)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    wi = tl.program_id(1) * BLOCK_KW + tl.arange(0, BLOCK_KW)
    offs_i = tl.arange(0, 8)
    wmask = (offs_n < N)[:, None] & (wi < KW)[None, :]
    words = tl.load(w_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    if HAS_ZERO:
        q = (words[:, :, None] >> (offs_i * 4)[None, None, :]) & 15
    else:
        q = (words[:, :, None] << (28 - offs_i * 4)[None, None, :]) >> 28
    k = (wi * 8)[:, None] + offs_i[None, :]
    omask = (offs_n < N)[:, None, None] & (k < K)[None, :, :]
    optr = o_ptr + offs_n[:, None, None] * K + k[None, :, :]
    if INT_OUT and not STEPS:
        tl.store(optr, q.to(tl.int8), mask=omask)
    else:
        g = (wi * 8) // G
        smask = wmask & (g < NG)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        wq = q.to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
            wq = wq - z[:, :, None]
        if STEPS:  # u = s / r, an integer by construction: rounded, not truncated
            r = tl.load(r_ptr + offs_n, mask=offs_n < N, other=1.0).to(tl.float32)
            tl.store(optr, (wq * tl.floor(s / r[:, None] + 0.5)[:, :, None]).to(tl.int8), mask=omask)
        else:
            tl.store(optr, (wq * s[:, :, None]).to(o_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _int4_dequant_flat(w_ptr, s_ptr, z_ptr, r_ptr, o_ptr, TOTAL_W, KW, NG, G,
                       HAS_ZERO: tl.constexpr, INT_OUT: tl.constexpr, STEPS: tl.constexpr, BLOCK_W: tl.constexpr):
    w_ptr = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    # K % 8 == 0: packed words and the dense output are both one contiguous stream (word j -> out[8j:8j+8]),
    # so each program reads BLOCK_W consecutive words and writes 8 * BLOCK_W consecutive values (16-byte
    # stores for bf16): no row structure, every access contiguous.
    j = tl.program_id(0).to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)
    jm = j < TOTAL_W
    words = tl.load(w_ptr + j, mask=jm, other=0)
    offs_i = tl.arange(0, 8)
    if HAS_ZERO:
        q = (words[:, None] >> (offs_i * 4)[None, :]) & 15
    else:
        q = (words[:, None] << (28 - offs_i * 4)[None, :]) >> 28
    optr = o_ptr + (j * 8)[:, None] + offs_i[None, :]
    omask = jm[:, None]
    if INT_OUT and not STEPS:
        tl.store(optr, q.to(tl.int8), mask=omask)
    else:
        row = j // KW
        sidx = row * NG + ((j - row * KW) * 8) // G
        s = tl.load(s_ptr + sidx, mask=jm, other=0.0).to(tl.float32)
        wq = q.to(tl.float32)
        if HAS_ZERO:
            wq = wq - tl.load(z_ptr + sidx, mask=jm, other=0.0).to(tl.float32)[:, None]
        if STEPS:
            u = tl.floor(s / tl.load(r_ptr + row, mask=jm, other=1.0).to(tl.float32) + 0.5)
            tl.store(optr, (wq * u[:, None]).to(tl.int8), mask=omask)
        else:
            tl.store(optr, (wq * s[:, None]).to(o_ptr.dtype.element_ty), mask=omask)



def dequantize_int4_triton(qweight, scales, zeros, group_size: int, K: int, dtype, int_out=False, config=None,
                           row_steps=None):
    """Packed int4 [N, KW*4 bytes] -> dense [N, K] (dtype, (q - z) * s) or int8 values if int_out; with
    row_steps [N] (int_out, scales [N, groups] integer multiples of them) the int8 values (q - z) * (s / r)."""
    return dequantize_int4_plan(qweight, scales, zeros, group_size, K, dtype, int_out, config, row_steps)(
        qweight, scales, zeros, row_steps)


def dequantize_int4_plan(qweight, scales, zeros, group_size: int, K: int, dtype, int_out=False, config=None,
                         row_steps=None):
    """`dequantize_int4_triton` for arguments with this metadata, the launch bound once:
    `call(qweight, scales, zeros, row_steps) -> out` (a fresh [N, K] tensor; the kernel reads the packed bytes as
    words)."""
    assert row_steps is None or (int_out and scales is not None), "row_steps: int8 output from group scales"
    assert_words(qweight)
    N, KW = qweight.shape[0], qweight.shape[1] // 4
    out_dtype, device = torch.int8 if int_out else dtype, qweight.device
    G = norm_group(K, group_size)
    NG = scales.shape[1] if scales is not None else 1
    meta = dict(HAS_ZERO=zeros is not None, INT_OUT=int_out, STEPS=row_steps is not None)
    if K % 8 == 0 and (config is None or "BLOCK_W" in config):
        cfg = dict(config or DEQUANT_FLAT_CONFIG)
        bound = bind(_int4_dequant_flat, (cdiv(N * KW, cfg["BLOCK_W"]),), [TENSOR] * 5 + [N * KW, KW, NG, G],
                     dict(meta, **cfg))
    else:
        cfg = dict(config or DEQUANT_CONFIG)
        bound = bind(_int4_dequant, (cdiv(N, cfg["BLOCK_N"]), cdiv(KW, cfg["BLOCK_KW"])),
                     [TENSOR] * 5 + [N, K, KW, NG, G], dict(meta, **cfg))

    def call(qweight, scales, zeros, row_steps):
        out = torch.empty(N, K, dtype=out_dtype, device=device)
        s = scales if scales is not None else out  # an absent operand's slot: never read
        z = zeros if zeros is not None else s
        bound(qweight, s, z, row_steps if row_steps is not None else s, out)
        return out
    return call
