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
