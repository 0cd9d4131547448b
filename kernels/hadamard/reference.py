"""Pure-torch Hadamard transform: the oracle of the Walsh–Hadamard kernel and the CPU path of qpass::hadamard.

The transform of a row x of length n = m·p (p a power of two) is `x @ kron(mix, H_p / √p)`: viewing x as
X [m, p] (index i·p + j), the result is `mixᵀ · X · H_p / √p`. H_p is Sylvester's (symmetric, entries ±1);
`mix` is an orthogonal m × m matrix (None when m = 1), so the whole transform is orthogonal.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.cache
def _sylvester(p: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < p:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def sylvester(p: int, dtype=torch.float32, device=None) -> Tensor:
    """H_p with ±1 entries (p a power of two)."""
    if p < 1 or p & (p - 1):
        raise ValueError(f"Sylvester Hadamard needs a power of two, got {p}")
    return _sylvester(p).to(dtype=dtype, device=device)


def hadamard_ref(x: Tensor, mix: Tensor | None) -> Tensor:
    """`x @ kron(mix, H_p / √p)` over the last dim, computed in fp32, returned in x's dtype."""
    n = x.shape[-1]
    m = 1 if mix is None else mix.shape[0]
    p = n // m
    X = x.float().reshape(*x.shape[:-1], m, p)
    Y = X @ sylvester(p, device=x.device) * (p ** -0.5)
    if mix is not None:
        Y = mix.float().t() @ Y
    return Y.reshape(x.shape).to(x.dtype)
