"""qpass::hadamard: the online rotation of a rotated model (the input of a down projection whose weight was
pre-multiplied by the same transform). Triton fast Walsh–Hadamard on CUDA, the reference elsewhere."""
from __future__ import annotations

import functools
from typing import Optional

from torch import Tensor

from .. import checks as C
from ..define import kernel_op
from .reference import hadamard_ref


@functools.cache
def _triton():
    from . import fwht  # imports triton: only on first use
    return fwht


@kernel_op("qpass::hadamard")
def hadamard(x: Tensor, mix: Optional[Tensor]) -> Tensor:
    """x [..., n] @ kron(mix, H_p / √p), n = m·p with p a power of two; mix [m, m] orthogonal or None (m = 1)."""
    C.check_once(C.check_hadamard, x, mix)
    if x.is_cuda:
        return _triton().run(x, mix)
    return hadamard_ref(x, mix)


@hadamard.register_fake
def _(x, mix):
    C.check_hadamard(x, mix)
    return x.new_empty(x.shape)
