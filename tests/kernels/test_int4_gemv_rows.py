"""int4/gemv_rows.py's _gemv_rows (batched decode: each word decoded once for up to 8 rows) vs the references, for
W4A16 rows and W4A8 codes. Interpreter: bf16 stores round differently there, so bf16 cases get a loose bound."""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels.int4 import reference as R
from qpass.kernels.int4.gemv_rows import MAX_ROWS, w4a16_gemv_rows
from qpass.kernels.int4.w4a16 import w4a16_linear_triton
from qpass.kernels.int8 import reference as R8

from kernels_util import rel_err, w4a16_case

SMALL = dict(BLOCK_N=8, BLOCK_KW=16, num_warps=1)  # several K chunks and column blocks at test sizes

# (M, N, K, group, symmetric, dtype): M = 1, every row count to MAX_ROWS and past it (two row blocks, a partial
# one), N not a multiple of BLOCK_N, K not a multiple of 8 or of the chunk, per-channel and 32/64/128 groups
CASES = [
    (1, 33, 200, 32, True, torch.float16),
    (2, 40, 264, 64, False, torch.float16),
    (3, 17, 1000, -1, False, torch.float16),
    (4, 8, 136, 32, True, torch.float16),
    (5, 21, 520, 32, False, torch.float16),
    (8, 64, 256, 128, True, torch.float16),
    (11, 24, 2048, 128, True, torch.float16),
    (16, 9, 172, -1, True, torch.float16),
    (6, 40, 300, 64, True, torch.bfloat16),
]


@pytest.mark.parametrize("M,N,K,G,sym,dtype", CASES)
def test_gemv_rows_matches_the_w4a16_reference(M, N, K, G, sym, dtype):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, dtype, bias=N % 2 == 1)
    y = torch.full((M, N), float("nan"), dtype=dtype)
    w4a16_gemv_rows(x, p, s, z, b, G, y, config=SMALL)
    assert torch.isfinite(y).all()
    assert rel_err(y, R.w4a16_linear_ref(x, p, s, z, b, G)) < (2e-3 if dtype == torch.float16 else 1.5e-2)


@pytest.mark.parametrize("M,N,K,G,sym", [(1, 40, 256, 64, False), (3, 33, 200, 32, True), (8, 24, 1000, 64, False),
                                         (10, 17, 136, -1, True)])
def test_gemv_rows_on_w4a8_codes_is_exact_up_to_the_output_rounding(M, N, K, G, sym):
    q, s, z = F.quantize_int4(torch.randn(N, K), G, sym)
    p = F.pack_int4(q)
    ng = s.shape[1] if G > 0 else 1
    s, z = s.reshape(N, ng).float(), None if z is None else z.reshape(N, ng).float()
    x = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    xs = torch.rand(M) * 1e-2 + 1e-3
    b = torch.randn(N)
    y = torch.empty(M, N, dtype=torch.float32)
    w4a16_gemv_rows(x, p, s, z, b, G, y, config=SMALL, x_scale=xs)
    ref = R8.w4a8_linear_ref(x, p, s.reshape(N) if G <= 0 else s, xs, b, torch.float64, G,
                             w_zero=None if z is None else (z.reshape(N) if G <= 0 else z))
    assert rel_err(y, ref) < 1e-6  # integer products and sums are exact in fp32: only the scaling rounds


def test_gemv_rows_fp32_accuracy_over_a_long_k():
    x, p, s, z, _ = w4a16_case(MAX_ROWS, 24, 4096, 128, True, torch.float16, bias=False)
    y = torch.empty(MAX_ROWS, 24, dtype=torch.float32)
    w4a16_gemv_rows(x, p, s, z, None, 128, y, config=dict(BLOCK_N=8, BLOCK_KW=64, num_warps=2))
    yr = x.double() @ F.dequantize_int4(F.unpack_int4(p, 4096, signed=True), s, None, 128).double().t()
    assert rel_err(y, yr) < 1e-4


def test_the_w4a16_op_runs_gemv_rows_when_asked():
    x, p, s, z, b = w4a16_case(6, 40, 264, 64, False, torch.float16)
    y = w4a16_linear_triton(x.reshape(2, 3, 264), p, s, z, b, 64, kernel="gemv_rows")
    assert y.shape == (2, 3, 40)
    assert rel_err(y.reshape(6, 40), R.w4a16_linear_ref(x, p, s, z, b, 64)) < 2e-3
