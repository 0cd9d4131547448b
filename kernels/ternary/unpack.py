"""The trit unpack of the ternary tensor-core tile: int32 words of 16 two-bit codes -> their trits, in registers."""
from __future__ import annotations

import triton
import triton.language as tl

from ..int4.unpack import half_of


@triton.jit
def _merge16(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15):
    """Planes t_i [R, C] -> [R, 16C], plane i's value of word c at column 16c + i (formats.pack_trits' order), by
    `tl.interleave`s: each word's values stay in the thread that loaded it (as int4/unpack.py's `nibbles`)."""
    even = tl.interleave(tl.interleave(tl.interleave(t0, t8), tl.interleave(t4, t12)),
                         tl.interleave(tl.interleave(t2, t10), tl.interleave(t6, t14)))
    odd = tl.interleave(tl.interleave(tl.interleave(t1, t9), tl.interleave(t5, t13)),
                        tl.interleave(tl.interleave(t3, t11), tl.interleave(t7, t15)))
    return tl.interleave(even, odd)


@triton.jit
def trits(words):
    """int32 words [R, C] -> their 16 trits [R, 16C] as int32 in {-1, 0, 1} (code - 1)."""
    return _merge16(((words >> 0) & 3) - 1, ((words >> 2) & 3) - 1, ((words >> 4) & 3) - 1, ((words >> 6) & 3) - 1,
                    ((words >> 8) & 3) - 1, ((words >> 10) & 3) - 1, ((words >> 12) & 3) - 1,
                    ((words >> 14) & 3) - 1, ((words >> 16) & 3) - 1, ((words >> 18) & 3) - 1,
                    ((words >> 20) & 3) - 1, ((words >> 22) & 3) - 1, ((words >> 24) & 3) - 1,
                    ((words >> 26) & 3) - 1, ((words >> 28) & 3) - 1, ((words >> 30) & 3) - 1)


@triton.jit
def trit_floats(words, DT: tl.constexpr):
    """`trits(words)` as exact DT (fp16 / bf16) values without an int -> float conversion per value: codes i and
    i + 8 of each word or-ed into the mantissas of two 16-bit floats of value BASE + code, BASE + 1 off in DT
    (two values per instruction), as int4/unpack.py's `nibble_floats`."""
    MAGIC: tl.constexpr = 0x43004300 if DT == tl.bfloat16 else 0x64006400
    BASE: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0
    off = tl.full([1, 1], BASE + 1.0, DT)
    p0 = (words & 0x00030003) | MAGIC
    p1 = ((words >> 2) & 0x00030003) | MAGIC
    p2 = ((words >> 4) & 0x00030003) | MAGIC
    p3 = ((words >> 6) & 0x00030003) | MAGIC
    p4 = ((words >> 8) & 0x00030003) | MAGIC
    p5 = ((words >> 10) & 0x00030003) | MAGIC
    p6 = ((words >> 12) & 0x00030003) | MAGIC
    p7 = ((words >> 14) & 0x00030003) | MAGIC
    return _merge16(half_of(p0, 0, DT) - off, half_of(p1, 0, DT) - off, half_of(p2, 0, DT) - off,
                    half_of(p3, 0, DT) - off, half_of(p4, 0, DT) - off, half_of(p5, 0, DT) - off,
                    half_of(p6, 0, DT) - off, half_of(p7, 0, DT) - off, half_of(p0, 16, DT) - off,
                    half_of(p1, 16, DT) - off, half_of(p2, 16, DT) - off, half_of(p3, 16, DT) - off,
                    half_of(p4, 16, DT) - off, half_of(p5, 16, DT) - off, half_of(p6, 16, DT) - off,
                    half_of(p7, 16, DT) - off)
