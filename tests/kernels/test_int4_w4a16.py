"""W4A16 Triton kernels (GEMV for M = 1, swap-AB tensor-core kernel otherwise) vs the reference."""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels.int4 import reference as R
from qpass.kernels.int4.w4a16 import w4a16_linear_triton

from kernels_util import rel_err, w4a16_case

# (M, N, K, group, symmetric, dtype): M = 1, odd M, K tails (K % 8, % G, % BLOCK_K), N tails, every group
CASES = [
    (1, 64, 256, 128, True, torch.float16),
    (1, 80, 200, 64, True, torch.float16),
    (1, 72, 172, -1, True, torch.float32),
    (1, 40, 300, 32, False, torch.float16),
    (1, 96, 512, 128, False, torch.float32),
    (1, 33, 100, 32, True, torch.float16),
    (1, 128, 384, 64, False, torch.float16),
    (2, 64, 256, 64, True, torch.float16),
    (3, 80, 200, 32, False, torch.float16),
    (5, 40, 300, -1, False, torch.float32),
    (7, 96, 256, 128, True, torch.float16),
    (16, 64, 512, 128, True, torch.float16),
    (17, 100, 192, 64, True, torch.float16),
    (31, 48, 160, 32, False, torch.float16),
    (33, 96, 256, 128, False, torch.float16),
    (64, 128, 256, 64, True, torch.float32),
    (65, 64, 136, -1, True, torch.float16),
    (100, 72, 320, 32, True, torch.float16),
    (128, 128, 512, 128, False, torch.float16),
    (127, 200, 264, 64, False, torch.float16),
    (9, 256, 1024, 256, True, torch.float16),
    (1, 256, 1024, 256, True, torch.float16),
]


@pytest.mark.parametrize("M,N,K,G,sym,dtype", CASES)
def test_w4a16_matches_reference(M, N, K, G, sym, dtype):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, dtype, bias=(M % 2 == 1))
    y = w4a16_linear_triton(x, p, s, z, b, G)
    yr = R.w4a16_linear_ref(x, p, s, z, b, G)
    assert y.shape == (M, N) and y.dtype == dtype
    tol = 2e-3 if (dtype == torch.float16 and M > 1) else 1e-5 if dtype == torch.float32 and M == 1 else 2e-3
    assert rel_err(y, yr) < tol


@pytest.mark.parametrize("M,N,K,G,sym", [(1, 64, 200, 64, True), (4, 48, 256, 128, False), (1, 40, 172, -1, False)])
def test_w4a16_both_kernels_any_m(M, N, K, G, sym):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, torch.float16)
    yr = R.w4a16_linear_ref(x, p, s, z, b, G)
    for kernel in ("gemv2", "tc"):  # the "gemv" variant: test_variants.py
        assert rel_err(w4a16_linear_triton(x, p, s, z, b, G, kernel=kernel), yr) < 2e-3


def test_w4a16_3d_input():
    x, p, s, z, b = w4a16_case(6, 64, 128, 64, True, torch.float16)
    y = w4a16_linear_triton(x.view(2, 3, 128), p, s, z, b, 64)
    assert y.shape == (2, 3, 64)
    assert rel_err(y.reshape(6, 64), R.w4a16_linear_ref(x, p, s, z, b, 64)) < 2e-3


@pytest.mark.parametrize("N,K,G,sym", [(40, 200, 64, True), (33, 172, -1, False), (64, 300, 32, False)])
def test_int4_dequant_kernel(N, K, G, sym):
    from qpass.kernels.int4.dequant import dequantize_int4_triton
    q, s, z = F.quantize_int4(torch.randn(N, K), G, sym)
    p = F.pack_int4(q)
    assert torch.equal(dequantize_int4_triton(p, s, z, G, K, torch.float32), F.dequantize_int4(q, s, z, G))
    if sym:
        assert torch.equal(dequantize_int4_triton(p, None, None, -1, K, torch.int8, int_out=True), q)


@pytest.mark.parametrize("swap", [True, False])
@pytest.mark.parametrize("scale_after", [False, True])
@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("M,N,K,G,sym", [(5, 72, 200, 64, True), (18, 40, 384, 128, False), (3, 48, 136, -1, False)])
def test_w4a16_tc_every_form(M, N, K, G, sym, swap, scale_after, split):
    """Every form of the tensor-core kernel (int4/tc.py): orientation, scale on the weights or after the dot,
    split-K (fp32 atomics + the bias after), K tails and a group smaller than the configured K step."""
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, torch.float16, bias=True)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, SPLIT_K=split, SWAP=swap, SCALE_AFTER=scale_after,
               num_warps=4, num_stages=2)
    y = w4a16_linear_triton(x, p, s, z, b, G, config=cfg, kernel="tc")
    assert rel_err(y, R.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3
