"""Paley Hadamard matrices and the rotation factors built from them (qpass/paley.py, qpass/rotation.py)."""
import pytest
import torch

from qpass.kernels.hadamard.ops import hadamard
from qpass.paley import MAX_ORDER, hadamard_factor, paley_hadamard
from qpass.rotation import mix_matrix, transform


@pytest.mark.parametrize("order", [4, 8, 12, 20, 24, 28, 36, 44, 60, 76, 108, 140])
def test_paley_matrices_are_hadamard(order):
    h = paley_hadamard(order)
    assert h is not None and h.shape == (order, order)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.t(), order * torch.eye(order, dtype=h.dtype))


@pytest.mark.parametrize("order", [6, 10, 92, 172])  # not a multiple of 4, or neither construction applies
def test_orders_without_a_paley_construction(order):
    assert paley_hadamard(order) is None


@pytest.mark.parametrize("n, order", [(576, 36), (1536, 12), (96, 12), (4864, 76), (14336, 28), (2560, 20)])
def test_the_smallest_paley_order_dividing_the_width_is_chosen(n, order):
    h = hadamard_factor(n)
    assert h.shape == (order, order) and (n // order) & (n // order - 1) == 0


@pytest.mark.parametrize("n", [64, 4096, 172, 11008])  # a power of two; 43·4 (no Paley order); 43·256 (> MAX_ORDER)
def test_no_factor_where_none_is_needed_or_none_fits(n):
    assert hadamard_factor(n) is None
    m = n // (n & -n)
    mix = mix_matrix(n, seed=0)
    assert (mix is None) == (m == 1)
    if mix is not None:  # the fallback: a random orthogonal matrix of the odd part
        assert mix.shape == (m, m) and m <= MAX_ORDER
        assert torch.allclose(mix @ mix.t(), torch.eye(m, dtype=mix.dtype), atol=1e-12)


@pytest.mark.parametrize("n", [576, 1536])
def test_transform_of_a_paley_width_is_a_true_hadamard(n):
    t = transform(n, seed=0)
    assert torch.allclose(t @ t.t(), torch.eye(n, dtype=t.dtype), atol=1e-12)
    # every entry ±1/√n: the most incoherent orthogonal matrix (a random factor would leave larger entries)
    assert torch.allclose(t.abs(), torch.full_like(t, n ** -0.5), atol=1e-12)


def test_the_online_op_with_a_paley_mix_equals_the_dense_transform():
    n = 1536
    x = torch.randn(3, 5, n, generator=torch.Generator().manual_seed(0))
    mix = mix_matrix(n, seed=0).float()
    ref = (x.double() @ transform(n, seed=0)).float()
    torch.testing.assert_close(hadamard(x, mix), ref, rtol=1e-5, atol=1e-5)
