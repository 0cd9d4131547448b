"""Pure-torch Hadamard transform: the oracle of the Walsh–Hadamard kernel and the CPU path of qpass::hadamard.

`fwht` (two Kronecker factors) is checked against Sylvester's matrix in the tests. The transform of a row x of length n = m·p (p a power of two) is `x @ kron(mix, H_p / √p)`: viewing x as
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


def fwht(x: Tensor) -> Tensor:
    """x [..., p] @ H_p (unscaled) as H_a · X · H_b on X = x viewed [a, b] (p = a·b, H_p = H_a ⊗ H_b): two
    small matmuls, p·(a + b) multiply-adds per row instead of p² (the CPU path)."""
    p = x.shape[-1]
    a = 1 << ((p.bit_length() - 1) // 2)
    b = p // a
    X = x.reshape(-1, a, b)
    Y = sylvester(a, x.dtype, x.device) @ X @ sylvester(b, x.dtype, x.device)
    return Y.reshape(x.shape)


def hadamard_ref(x: Tensor, mix: Tensor | None) -> Tensor:
    """`x @ kron(mix, H_p / √p)` over the last dim, computed in fp32, returned in x's dtype."""
    n = x.shape[-1]
    m = 1 if mix is None else mix.shape[0]
    p = n // m
    X = x.float().reshape(*x.shape[:-1], m, p)
    Y = fwht(X) * (p ** -0.5)
    if mix is not None:
        Y = mix.float().t() @ Y
    return Y.reshape(x.shape).to(x.dtype)
