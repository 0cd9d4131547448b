"""qpass::ternary_linear: the ternary Triton kernels on CUDA (groups they support), the reference elsewhere.

Arguments are checked (kernels/checks.py) in the implementation and the fake.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .. import checks as C
from ..define import kernel_op
from .reference import ternary_linear_ref


@functools.cache
def _triton():
    from . import ternary  # imports triton: only on first use (not at every call: an import statement costs µs)
    return ternary


@kernel_op("qpass::ternary_linear")
def ternary_linear(x: Tensor, t1: Tensor, t2: Tensor, alpha1: Tensor, alpha2: Tensor, bias: Optional[Tensor],
                   group_size: int) -> Tensor:
    """x [..., K] @ (diag(a1) T1 + diag(a2) T2)^T; t1, t2 = formats.pack_trits (uint8 [N, ceil(K/16)*4]),
    alpha1/alpha2 [N, ceil(K/G)]; group_size <= 0 = per-channel."""
    return C.planned(C.check_ternary, _plan, x, t1, t2, alpha1, alpha2, bias, group_size)(
        x, t1, t2, alpha1, alpha2, bias, group_size)


def _plan(x, t1, t2, alpha1, alpha2, bias, group_size):
    """The call for arguments of this signature (decided once per signature: kernels/checks.py `planned`)."""
    if x.is_cuda:
        kernels = _triton()
        if kernels.supported_group(x.shape[-1], group_size):
            return kernels.plan(x, t1, t2, alpha1, alpha2, bias, group_size)
    return ternary_linear_ref


@ternary_linear.register_fake
def _(x, t1, t2, alpha1, alpha2, bias, group_size):
    C.check_ternary(x, t1, t2, alpha1, alpha2, bias, group_size)
    return x.new_empty(*x.shape[:-1], t1.shape[0])
