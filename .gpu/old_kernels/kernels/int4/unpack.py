"""The int4 unpack of the tiled kernels: int32 words -> their eight values, in registers."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def nibbles(words, HAS_ZERO: tl.constexpr):
    """int32 words [R, C] -> their 8 int4 values [R, 8C], value i of word c at column 8c + i (formats.pack_int4's
    order): plain nibbles [0, 15] with zero points, two's complement (sign-extended) without.

    The eight planes are merged by `tl.interleave`s, which keep each word's values in the thread that loaded it;
    a broadcast [R, C, 8] tensor reshaped to [R, 8C] instead goes through shared memory (2-10x slower tiles on
    an H200: benchmarks/results/prompt_h200/)."""
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
    even = tl.interleave(tl.interleave(n0, n4), tl.interleave(n2, n6))  # n0 n2 n4 n6 of each word
    odd = tl.interleave(tl.interleave(n1, n5), tl.interleave(n3, n7))
    return tl.interleave(even, odd)


@triton.jit
def half_of(pairs, SHIFT: tl.constexpr, DT: tl.constexpr):
    """The 16-bit half at bit SHIFT (0 or 16) of each int32, read as a DT (fp16 / bf16) value."""
    return ((pairs >> SHIFT) & 0xFFFF).to(tl.int16).to(DT, bitcast=True)


@triton.jit
def nibble_floats(words, HAS_ZERO: tl.constexpr, DT: tl.constexpr):
    """`nibbles(words, HAS_ZERO)` as exact DT (fp16 / bf16) values, without an int -> float conversion per value
    (I2F runs at a quarter of the ALU rate on sm_90, and the prefill tiles spent as many issue slots on it as their
    MMAs took): nibbles i and i + 4 of each word are or-ed into the mantissas of two 16-bit floats of value
    BASE + n (BASE 128 for bf16's 7-bit mantissa, 1024 for fp16's 10), and BASE (+ 8 for two's complement codes,
    flipped to offset binary) comes off in DT, exactly, two values per instruction (HADD2)."""
    MAGIC: tl.constexpr = 0x43004300 if DT == tl.bfloat16 else 0x64006400
    BASE: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0  # bf16's 7-bit mantissa, fp16's 10 bits
    if not HAS_ZERO:
        words = words ^ -2004318072  # 0x88888888: two's complement -> offset binary (q + 8)
    off = tl.full([1, 1], BASE if HAS_ZERO else BASE + 8.0, DT)  # a DT constant: the subtraction stays in DT
    p0 = (words & 0x000F000F) | MAGIC
    p1 = ((words >> 4) & 0x000F000F) | MAGIC
    p2 = ((words >> 8) & 0x000F000F) | MAGIC
    p3 = ((words >> 12) & 0x000F000F) | MAGIC
    n0, n4 = half_of(p0, 0, DT) - off, half_of(p0, 16, DT) - off
    n1, n5 = half_of(p1, 0, DT) - off, half_of(p1, 16, DT) - off
    n2, n6 = half_of(p2, 0, DT) - off, half_of(p2, 16, DT) - off
    n3, n7 = half_of(p3, 0, DT) - off, half_of(p3, 16, DT) - off
    even = tl.interleave(tl.interleave(n0, n4), tl.interleave(n2, n6))
    odd = tl.interleave(tl.interleave(n1, n5), tl.interleave(n3, n7))
    return tl.interleave(even, odd)


@triton.jit
def plane_dot(words, x, HAS_ZERO: tl.constexpr):
    """words [R, 16] (one 128-wide K step) . x [C, 128]^T -> fp32 [R, C] (x fp16 / bf16; the codes as offset
    values, like `nibble_floats`) as eight K = 16 dots, one per nibble plane: plane i is value i of every word, an
    elementwise function of the loaded words, so the compiler hands it to wgmma as its register operand with no
    shared-memory round trip of the decoded tile (the interleaved `nibble_floats` tile takes one: 8 STS.128 + a
    barrier + 8 LDSM per step in its sm_90 SASS). Its x columns 8c + i are split out of each thread's 8
    consecutive columns of x in registers."""
    DT: tl.constexpr = x.dtype
    C: tl.constexpr = x.shape[0]
    MAGIC: tl.constexpr = 0x43004300 if DT == tl.bfloat16 else 0x64006400
    BASE: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0
    if not HAS_ZERO:
        words = words ^ -2004318072  # 0x88888888: two's complement -> offset binary (q + 8)
    off = tl.full([1, 1], BASE if HAS_ZERO else BASE + 8.0, DT)
    even, odd = tl.split(tl.reshape(x, [C, 16, 4, 2]))  # columns 8c + 2t + (0 | 1)
    e0, e1 = tl.split(tl.reshape(even, [C, 16, 2, 2]))  # values (0, 4), (2, 6)
    o0, o1 = tl.split(tl.reshape(odd, [C, 16, 2, 2]))  # (1, 5), (3, 7)
    x0, x4 = tl.split(e0)
    x2, x6 = tl.split(e1)
    x1, x5 = tl.split(o0)
    x3, x7 = tl.split(o1)
    p = (words & 0x000F000F) | MAGIC  # values i and i + 4 of each word in the two halves
    part = tl.dot(half_of(p, 0, DT) - off, tl.trans(x0))
    part = tl.dot(half_of(p, 16, DT) - off, tl.trans(x4), part)
    p = ((words >> 4) & 0x000F000F) | MAGIC
    part = tl.dot(half_of(p, 0, DT) - off, tl.trans(x1), part)
    part = tl.dot(half_of(p, 16, DT) - off, tl.trans(x5), part)
    p = ((words >> 8) & 0x000F000F) | MAGIC
    part = tl.dot(half_of(p, 0, DT) - off, tl.trans(x2), part)
    part = tl.dot(half_of(p, 16, DT) - off, tl.trans(x6), part)
    p = ((words >> 12) & 0x000F000F) | MAGIC
    part = tl.dot(half_of(p, 0, DT) - off, tl.trans(x3), part)
    part = tl.dot(half_of(p, 16, DT) - off, tl.trans(x7), part)
    return part
