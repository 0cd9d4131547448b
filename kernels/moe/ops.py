"""qpass::moe_w4a16 (int4 experts: the grouped Triton kernel on CUDA, the pure-torch reference elsewhere) and
qpass::moe_linear (full-precision experts, so a lowered MoE program calls only qpass and aten ops).

x [S, K] rows sorted by expert; offs [E] cumulative rows per expert (transformers' grouped_mm contract);
output [S, N]. Arguments are checked (kernels/checks.py) in the implementation and the fake.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .. import checks as C
from ..define import kernel_op
from .reference import moe_linear_ref, moe_w4a16_ref


@functools.cache
def _triton():
    from . import grouped  # imports triton: only on first use
    return grouped


@kernel_op("qpass::moe_w4a16")
def moe_w4a16(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Optional[Tensor], offs: Tensor,
              group_size: int) -> Tensor:
    """Expert e's rows x[offs[e-1]:offs[e]] @ dequant(qweight[e])^T; qweight = formats.pack_int4 of each
    expert's [N, K] codes (uint8 [E, N, ceil(K/8)*4]), scales / zeros [E, N, groups] (zeros None = signed
    symmetric), group_size <= 0 = per-channel."""
    C.check_once(C.check_moe_w4a16, x, qweight, scales, zeros, offs, group_size)
    if x.is_cuda:
        return _triton().moe_w4a16_triton(x, qweight, scales, zeros, offs, group_size)
    return moe_w4a16_ref(x, qweight, scales, zeros, offs, group_size)


@moe_w4a16.register_fake
def _(x, qweight, scales, zeros, offs, group_size):
    C.check_moe_w4a16(x, qweight, scales, zeros, offs, group_size)
    return x.new_empty(x.shape[0], qweight.shape[1])


@kernel_op("qpass::moe_linear")
def moe_linear(x: Tensor, weight: Tensor, offs: Tensor) -> Tensor:
    """Expert e's rows @ weight[e]^T with weight [E, N, K] in full precision."""
    C.check_once(C.check_moe_linear, x, weight, offs)
    return moe_linear_ref(x, weight, offs)


@moe_linear.register_fake
def _(x, weight, offs):
    C.check_moe_linear(x, weight, offs)
    return x.new_empty(x.shape[0], weight.shape[1])
