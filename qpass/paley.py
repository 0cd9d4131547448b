"""Hadamard matrices of orders that are not powers of two (Paley's constructions), so a rotation of a width such
as 576 = 36 · 16 or 1536 = 12 · 128 is a true Hadamard transform — every entry ±1/√n, the most incoherent
orthogonal matrix — rather than a random orthogonal factor beside a Sylvester block (QuaRot uses the same
idea with tabulated matrices; these are computed, so no table ships).

Paley I: q prime, q ≡ 3 (mod 4) → order q + 1.  Paley II: q prime, q ≡ 1 (mod 4) → order 2(q + 1).
Both are built from the Jacobsthal matrix Q[i, j] = χ(j − i), χ the quadratic character mod q.
"""
from __future__ import annotations

import functools

import torch


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q ** 0.5) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    squares = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0] + [1 if r in squares else -1 for r in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[idx]


def _paley1(q: int) -> torch.Tensor:
    n = q + 1
    s = torch.zeros(n, n, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return torch.eye(n, dtype=torch.float64) + s


def _paley2(q: int) -> torch.Tensor:
    n = q + 1
    c = torch.zeros(n, n, dtype=torch.float64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    on_zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    on_sign = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, on_sign) + torch.kron(torch.eye(n, dtype=torch.float64), on_zero)


@functools.cache
def paley_hadamard(order: int) -> torch.Tensor | None:
    """A ±1 Hadamard matrix of this order (H·Hᵀ = order·I), float64, or None when neither Paley construction
    gives one."""
    if order % 4:
        return None
    if _is_prime(order - 1) and (order - 1) % 4 == 3:
        return _paley1(order - 1)
    if _is_prime(order // 2 - 1) and (order // 2 - 1) % 4 == 1:
        return _paley2(order // 2 - 1)
    return None


# The online transform multiplies by this factor densely (order² per row): larger orders cost more than they
# gain over a random orthogonal factor of the odd part.
MAX_ORDER = 256


def hadamard_factor(n: int) -> torch.Tensor | None:
    """The smallest Paley Hadamard of an order m · 2^j ≤ MAX_ORDER dividing n (m the odd part of n), scaled to
    be orthogonal, so n = order · p with p a power of two; None when n is a power of two or no such order."""
    m = n // (n & -n)
    if m == 1:
        return None
    order = m
    while n % order == 0 and order <= MAX_ORDER:
        h = paley_hadamard(order)
        if h is not None:
            return h / order ** 0.5
        order *= 2
    return None
