"""Pure-torch grouped expert linears: the CPU implementation of qpass::moe_w4a16 / qpass::moe_linear and the
oracle of the Triton kernel. Rows are sorted by expert; offs[e] is the end row of expert e (cumulative counts,
as transformers' grouped_mm takes them); rows past offs[-1] are not routed and come out zero."""
from __future__ import annotations

import torch

from ..formats import dequantize_int4, unpack_int4


def _per_expert(x: torch.Tensor, offs: torch.Tensor, N: int, weight_of) -> torch.Tensor:
    y = torch.zeros(x.shape[0], N, dtype=torch.float32, device=x.device)
    start = 0
    for e, end in enumerate(offs.tolist()):  # one host sync for all experts
        if end > start:  # an expert that received no rows costs nothing
            y[start:end] = x[start:end].float() @ weight_of(e).t()
        start = max(start, end)
    return y.to(x.dtype)


def moe_w4a16_ref(x, qweight, scales, zeros, offs, group_size: int) -> torch.Tensor:
    K = x.shape[-1]
    signed = zeros is None

    def weight(e):
        q = unpack_int4(qweight[e], K, signed=signed)
        return dequantize_int4(q, scales[e], None if signed else zeros[e], group_size)

    return _per_expert(x, offs, qweight.shape[1], weight)


def moe_linear_ref(x, weight, offs) -> torch.Tensor:
    return _per_expert(x, offs, weight.shape[1], lambda e: weight[e].float())
