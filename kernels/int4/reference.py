"""Pure-torch W4A16 reference: the CPU implementation of qpass::w4a16_linear and the oracle of the int4 kernels
(fp32 compute, cast to x's dtype at the end)."""
from __future__ import annotations

from ..formats import dequantize_int4, finish_linear, unpack_int4


def w4a16_linear_ref(x, qweight, scales, zeros, bias, group_size: int):
    K = x.shape[-1]
    q = unpack_int4(qweight, K, signed=zeros is None)
    w = dequantize_int4(q, scales, zeros, group_size)
    y = x.reshape(-1, K).float() @ w.t()
    return finish_linear(y, bias, x.dtype, x.shape[:-1])
