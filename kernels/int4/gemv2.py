"""W4A16 GEMV, the fallback at M = 1 where gemv4 does not apply (fp32 x, groups not a multiple of 32).

Each nibble becomes a float by OR-ing it into the mantissa of 2**23 (one LOP3 + one FADD instead of
shift/and/I2F); nibbles above bit 16 are taken from `word >> 16` so the value stays below 2**23, and the matching
x is pre-scaled by 16**-j (exact). Signed weights are turned into offset binary (q + 8) with one XOR per word;
the offset is removed per group as 8 * sum(x).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..tiling import cdiv
from ..formats import as_words
from ..launch import launch

_XOR8 = tl.constexpr(-2004318072)  # 0x88888888 as int32
_MAGIC = tl.constexpr(1258291200)  # 0x4B000000 = bits of 2**23

GEMV2_CONFIG = dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2, num_stages=1)  # H100 sweep2 winner; BLOCK_KW = 128 * num_warps


@triton.jit
def _w4a16_gemv2(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, N, K, KW, NG, stride_xm, stride_ym,
                 GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr):
    # Same decode as _w4a16_gemv, but the tile is [BLOCK_N, 128 * num_warps] words: the load layout then
    # gives each thread all BLOCK_N rows x 4 consecutive words (one 16-byte load per row), so the x values
    # (and their pre-scaling and sums) of those 4 words are shared by BLOCK_N rows in registers.
    # GW = words per group (constexpr, 0 = one group per row): the scale index is known per word.
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
            words = words ^ _XOR8
        if GW == 0:
            g = wi * 0
        else:
            g = wi // GW
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
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
            f = v.to(tl.float32, bitcast=True) - 8388608.0
            p += f * (xv * (1.0 / (16 ** (i % 4))))[None, :]
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=wmask, other=0.0).to(tl.float32)
            acc += s * (p - z * xs[None, :])
        else:
            acc += s * (p - 8.0 * xs[None, :])
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)



def w4a16_gemv2(x2, qweight, scales, zeros, bias, G: int, y, config=None):
    """x2 [M, K] (unit stride) -> y [M, N] (preallocated); G = the normalized group (formats.norm_group)."""
    M, K = x2.shape
    words = as_words(qweight)
    N, KW = words.shape
    cfg = dict(config or GEMV2_CONFIG)
    z = zeros if zeros is not None else scales
    b = bias if bias is not None else scales
    launch(_w4a16_gemv2, (cdiv(N, cfg["BLOCK_N"]), M), 
        x2, words, scales, z, b, y, N, K, KW, scales.shape[1], x2.stride(0), y.stride(0),
        GW=0 if G >= K else G // 8, HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None, **cfg)
    return y
