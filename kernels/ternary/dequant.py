"""Trit planes -> the dense weight a1*T1 + a2*T2 [N, K] in one HBM pass (ternary prefill: dequantize once, then
cuBLAS, as W4A16's int4/dequant.py: a Triton tile at many rows loses to cuBLAS by more than this pass costs)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..formats import as_words
from ..launch import launch
from ..tiling import cdiv
from .unpack import trits

DEQUANT_CONFIG = dict(BLOCK_N=16, BLOCK_KW=16, num_warps=4)


@triton.jit
def _spread16(v):
    """[R, C] -> [R, 16C]: each value repeated for the 16 trits of its word (in registers, as `trits` orders)."""
    v = tl.interleave(v, v)
    v = tl.interleave(v, v)
    v = tl.interleave(v, v)
    return tl.interleave(v, v)


@triton.jit
def _ternary_dequant(t1_ptr, t2_ptr, a1_ptr, a2_ptr, o_ptr, N, K, KW, NG, G,
                     BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    wi = tl.program_id(1) * BLOCK_KW + tl.arange(0, BLOCK_KW)
    wmask = (offs_n < N)[:, None] & (wi < KW)[None, :]
    w1 = tl.load(t1_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    w2 = tl.load(t2_ptr + offs_n[:, None] * KW + wi[None, :], mask=wmask, other=0)
    g = (wi * 16) // G  # a word's 16 trits lie in one group (G is a multiple of 16, or the whole row)
    sidx = offs_n[:, None] * NG + g[None, :]
    smask = wmask & (g < NG)[None, :]
    a1 = _spread16(tl.load(a1_ptr + sidx, mask=smask, other=0.0).to(tl.float32))
    a2 = _spread16(tl.load(a2_ptr + sidx, mask=smask, other=0.0).to(tl.float32))
    w = trits(w1).to(tl.float32) * a1 + trits(w2).to(tl.float32) * a2
    k = tl.program_id(1) * (BLOCK_KW * 16) + tl.arange(0, BLOCK_KW * 16)
    tl.store(o_ptr + offs_n[:, None] * K + k[None, :], w.to(o_ptr.dtype.element_ty),
             mask=(offs_n < N)[:, None] & (k < K)[None, :])


def dequantize_ternary_triton(t1, t2, a1, a2, G: int, K: int, dtype, config=None):
    """Packed trit planes (formats.pack_trits, uint8 [N, KW*4]) with scales a1, a2 [N, ceil(K/G)] -> dense
    a1*T1 + a2*T2 [N, K] in `dtype`; G the normalized group (formats.norm_group)."""
    w1, w2 = as_words(t1), as_words(t2)
    N, KW = w1.shape
    out = torch.empty(N, K, dtype=dtype, device=t1.device)
    cfg = dict(config or DEQUANT_CONFIG)
    launch(_ternary_dequant, (cdiv(N, cfg["BLOCK_N"]), cdiv(KW, cfg["BLOCK_KW"])), w1, w2, a1, a2, out, N, K, KW,
           a1.shape[1], G, **cfg)
    return out
