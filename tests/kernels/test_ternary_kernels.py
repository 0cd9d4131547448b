"""Ternary trit-plane Triton kernels vs the reference."""
import pytest
import torch

from qpass.kernels.ternary import reference as R
from qpass.kernels.ternary.ternary import ternary_linear_triton

from kernels_util import rel_err, ternary_case

CASES = [  # (M, N, K, group, dtype)
    (1, 64, 256, 128, torch.float16),
    (1, 80, 200, 64, torch.float32),
    (1, 72, 172, -1, torch.float16),
    (1, 40, 300, 32, torch.float16),
    (1, 96, 512, 128, torch.float32),
    (1, 33, 100, 32, torch.float16),
    (1, 256, 1024, 256, torch.float16),
    (2, 64, 256, 64, torch.float16),
    (3, 80, 200, 32, torch.float16),
    (5, 40, 300, -1, torch.float32),
    (7, 96, 256, 128, torch.float16),
    (16, 64, 512, 128, torch.float16),
    (17, 100, 192, 64, torch.float16),
    (31, 48, 160, 32, torch.float16),
    (33, 96, 256, 128, torch.float16),
    (64, 128, 256, 64, torch.float32),
    (65, 64, 136, -1, torch.float16),
    (100, 72, 320, 32, torch.float16),
    (128, 128, 512, 128, torch.float16),
    (127, 200, 264, 64, torch.float16),
    (9, 256, 1024, 256, torch.float16),
]


@pytest.mark.parametrize("M,N,K,G,dtype", CASES)
def test_ternary_matches_reference(M, N, K, G, dtype):
    x, p1, p2, a1, a2, b = ternary_case(M, N, K, G, dtype, bias=(M % 2 == 1))
    y = ternary_linear_triton(x, p1, p2, a1, a2, b, G)
    yr = R.ternary_linear_ref(x, p1, p2, a1, a2, b, G)
    assert y.shape == (M, N) and y.dtype == dtype
    assert rel_err(y, yr) < 2e-3


@pytest.mark.parametrize("M,N,K,G", [(1, 64, 200, 64), (3, 48, 256, 128), (1, 40, 172, -1)])
def test_ternary_both_kernels_any_m(M, N, K, G):
    x, p1, p2, a1, a2, b = ternary_case(M, N, K, G, torch.float16)
    yr = R.ternary_linear_ref(x, p1, p2, a1, a2, b, G)
    for kernel in ("gemv2", "tc"):  # the "gemv" variant: test_variants.py
        assert rel_err(ternary_linear_triton(x, p1, p2, a1, a2, b, G, kernel=kernel), yr) < 2e-3
