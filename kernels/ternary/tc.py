"""Ternary for M >= 2: the split-K tensor-core tile of int4/tc.py with the weight tile a1*T1 + a2*T2 built in
registers (trit planes: formats.pack_trits, 2 bits per trit, code t + 1, 16 trits per int32 word).

Each K step lies inside one group (BLOCK_K divides it), so a1 and a2 are one value per weight row per step: the
trits are unpacked straight to x's 16-bit float type (ternary/unpack.py, no int -> float conversion) and either
scaled on the tile (w = a1 t1 + a2 t2, one dot) or (SCALE_AFTER) the step's two exact trit products are scaled
(two dots, no per-value multiply: small M, where the tile is bound by its weight reads and decode, not its MMAs).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..formats import assert_words
from ..int4 import tc as int4_tc
from ..int4.tc import float_unpack
from ..tiling import by_row, oriented_dot, pick, split_k_plan, swap_ab_tile, tile_store, tile_zeros, x_step
from .unpack import trit_floats, trits

# (max M, config): int4/tc.py's tiles (the same 4 bits per weight); not yet swept for trits on a GPU
# W4A16's tiles, without its nibble-plane K step (`PLANES`: int4 words only)
TC_CONFIGS = [(max_m, {k: v for k, v in cfg.items() if k != "PLANES"}) for max_m, cfg in int4_tc.TC_CONFIGS]


@triton.jit
def _plane(t_ptr, offs_n, n_mask, k0, KW, DT: tl.constexpr, FLOAT_UNPACK: tl.constexpr, BLOCK_K: tl.constexpr):
    """One trit plane's [BLOCK_N, BLOCK_K] tile at k0, exact, in DT."""
    wi = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    words = tl.load(t_ptr + offs_n[:, None] * KW + wi[None, :], mask=n_mask[:, None] & (wi < KW)[None, :], other=0)
    if FLOAT_UNPACK:
        t = trit_floats(words, DT)
    else:
        t = trits(words).to(DT)
    return t


@triton.jit
def _ternary_tc(x_ptr, t1_ptr, t2_ptr, a1_ptr, a2_ptr, b_ptr, y_ptr, M, N, K, KW, NG, G, K_SPLIT, stride_xm,
                stride_ym, HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, SWAP: tl.constexpr,
                SCALE_AFTER: tl.constexpr, FLOAT_UNPACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr):
    t1_ptr = t1_ptr.to(tl.pointer_type(tl.int32), bitcast=True)  # the packed bytes, read as int32 words
    t2_ptr = t2_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    offs_n, offs_m, n_mask, m_mask = swap_ab_tile(M, N, BLOCK_M, BLOCK_N)
    acc = tile_zeros(BLOCK_M, BLOCK_N, SWAP)
    k_lo = tl.program_id(2) * K_SPLIT
    for k0 in range(k_lo, min(k_lo + K_SPLIT, K), BLOCK_K):
        x = x_step(x_ptr, offs_m, m_mask, k0, K, stride_xm, BLOCK_K)
        t1 = _plane(t1_ptr, offs_n, n_mask, k0, KW, x.dtype, FLOAT_UNPACK, BLOCK_K)
        t2 = _plane(t2_ptr, offs_n, n_mask, k0, KW, x.dtype, FLOAT_UNPACK, BLOCK_K)
        g = k0 // G
        a1 = tl.load(a1_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
        a2 = tl.load(a2_ptr + offs_n * NG + g, mask=n_mask, other=0.0).to(tl.float32)
        if SCALE_AFTER:
            acc += (oriented_dot(t1, x, None, SWAP) * by_row(a1, SWAP)
                    + oriented_dot(t2, x, None, SWAP) * by_row(a2, SWAP))
        else:
            if FLOAT_UNPACK and a1_ptr.dtype.element_ty == x_ptr.dtype.element_ty:
                # in x's type (two values per instruction): a1 t1 and a2 t2 exact, one rounding of their sum
                w = t1 * a1.to(x.dtype)[:, None] + t2 * a2.to(x.dtype)[:, None]
            else:
                w = (t1.to(tl.float32) * a1[:, None] + t2.to(tl.float32) * a2[:, None]).to(x.dtype)
            acc = oriented_dot(w, x, acc, SWAP)
    tile_store(acc, b_ptr, y_ptr, offs_n, offs_m, n_mask, m_mask, stride_ym, HAS_BIAS, ATOMIC, SWAP)


def ternary_tc(x2, t1, t2, a1, a2, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group; config: TC_CONFIGS' keys."""
    return ternary_tc_plan(x2, t1, t2, a1, a2, bias, G, y.stride(0), config)(x2, (t1, t2, a1, a2), bias, y)


def ternary_tc_plan(x2, t1, t2, a1, a2, bias, G: int, stride_ym: int, config=None):
    """`ternary_tc` for arguments with this metadata, the config decided and the launch bound once:
    `call(x2, (t1, t2, a1, a2), bias, y) -> y` (the packed trits as they are: the kernel reads words)."""
    assert_words(t1)
    assert_words(t2)
    cfg = dict(config or pick(TC_CONFIGS, x2.shape[0]))
    cfg.setdefault("FLOAT_UNPACK", float_unpack(x2.dtype))
    return split_k_plan(_ternary_tc, x2, (t1, t2, a1, a2), bias, t1.shape[0], t1.shape[1] // 4, a1.shape[1], G, cfg,
                        stride_ym)
