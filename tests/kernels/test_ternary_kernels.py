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
    for kernel in ("gemv4", "gemv2", "tc"):  # the "gemv" variant: test_variants.py
        assert rel_err(ternary_linear_triton(x, p1, p2, a1, a2, b, G, kernel=kernel), yr) < 2e-3


@pytest.mark.parametrize("N,K,G,dtype,nprog", [
    (64, 256, 128, torch.float16, 3), (33, 200, 32, torch.float16, 4), (40, 300, -1, torch.float16, 2),
    (17, 1000, 64, torch.float16, 2), (8, 64, 32, torch.float16, 1), (130, 4096, 128, torch.float16, 7),
    (21, 520, 32, torch.bfloat16, 2)])
def test_ternary_gemv4_persistent_rows_match_reference(N, K, G, dtype, nprog):
    """_ternary_gemv4 with few programs (several row blocks each: the register double buffer and its tail),
    K tails and per-channel scales. bf16 outputs round differently in the interpreter: a looser bound."""
    from qpass.kernels.formats import norm_group
    from qpass.kernels.ternary.gemv4 import gemv4_config, ternary_gemv4
    x, p1, p2, a1, a2, b = ternary_case(1, N, K, G, dtype, bias=(N % 2 == 1))
    cfg, _ = gemv4_config(p1.shape[1] // 4, block_n=4 if N > 16 else 2, num_warps=1)
    y = torch.full((1, N), float("nan"), dtype=dtype)
    ternary_gemv4(x, p1, p2, a1, a2, b, norm_group(K, G), y, config=cfg, nprog=nprog)
    yr = R.ternary_linear_ref(x.float(), p1, p2, a1, a2, b, G)
    assert rel_err(y.float(), yr) < (1e-2 if dtype == torch.bfloat16 else 2e-3)


def test_ternary_m1_kernel_choice():
    """gemv4 where it applies (fp16/bf16, groups of 32k or per-channel, K <= 16384), gemv2 otherwise; tc for M > 1;
    asking for gemv4 where it does not apply is refused by name."""
    from qpass.kernels.ternary.ternary import choose_kernel
    h = torch.float16
    assert choose_kernel(torch.zeros(1, 4096, dtype=h), 128) == "gemv4"
    assert choose_kernel(torch.zeros(1, 4096, dtype=torch.bfloat16), -1) == "gemv4"
    assert choose_kernel(torch.zeros(1, 4096, dtype=h), 16) == "gemv2"  # a group of one word
    assert choose_kernel(torch.zeros(1, 4096), 128) == "gemv2"  # fp32 x
    assert choose_kernel(torch.zeros(1, 16400, dtype=h), 128) == "gemv2"  # row longer than one chunk
    assert choose_kernel(torch.zeros(2, 4096, dtype=h), 128) == "tc"
    x, p1, p2, a1, a2, b = ternary_case(1, 8, 64, 16, h)
    with pytest.raises(ValueError, match="gemv4"):
        ternary_linear_triton(x, p1, p2, a1, a2, b, 16, kernel="gemv4")
