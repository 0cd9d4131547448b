"""Pure-torch ternary reference: the CPU implementation of qpass::ternary_linear and the oracle of the ternary
kernels (fp32 compute, cast to x's dtype at the end)."""
from __future__ import annotations

from ..formats import dequantize_ternary, finish_linear, unpack_trits


def ternary_linear_ref(x, t1, t2, a1, a2, bias, group_size: int):
    K = x.shape[-1]
    w = dequantize_ternary(unpack_trits(t1, K), unpack_trits(t2, K), a1, a2, group_size)
    y = x.reshape(-1, K).float() @ w.t()
    return finish_linear(y, bias, x.dtype, x.shape[:-1])
