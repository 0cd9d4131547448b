"""qpass::w4a16_linear: the int4 Triton kernels on CUDA (groups they support), the pure-torch reference elsewhere.

x [..., K]; weights [N, *] row-major like nn.Linear; output [..., N]. Arguments are checked (kernels/checks.py)
in the implementation and the fake.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .. import checks as C
from ..define import kernel_op
from .reference import w4a16_linear_ref


@functools.cache
def _triton():
    from . import w4a16  # imports triton: only on first use (not at every call: an import statement costs µs)
    return w4a16


@kernel_op("qpass::w4a16_linear")
def w4a16_linear(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Optional[Tensor], bias: Optional[Tensor],
                 group_size: int) -> Tensor:
    """x [..., K] (fp16/bf16/fp32) @ dequant(qweight)^T; qweight = formats.pack_int4 (uint8 [N, ceil(K/8)*4]),
    scales [N, ceil(K/G)], zeros (same shape, float; None = signed symmetric), group_size <= 0 = per-channel."""
    return C.planned(C.check_w4a16, _plan, x, qweight, scales, zeros, bias, group_size)(
        x, qweight, scales, zeros, bias, group_size)


def _plan(x, qweight, scales, zeros, bias, group_size):
    """The call for arguments of this signature (decided once per signature: kernels/checks.py `planned`)."""
    if x.is_cuda:
        kernels = _triton()
        if kernels.supported_group(x.shape[-1], group_size):
            return kernels.plan(x, qweight, scales, zeros, bias, group_size)
    return w4a16_linear_ref


@w4a16_linear.register_fake
def _(x, qweight, scales, zeros, bias, group_size):
    C.check_w4a16(x, qweight, scales, zeros, bias, group_size)
    return x.new_empty(*x.shape[:-1], qweight.shape[0])
