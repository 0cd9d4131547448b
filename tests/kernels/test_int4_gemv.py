"""int4/gemv.py's _w4a16_gemv4 (decode W4A16, 1.0-magic nibble decode, x in registers, persistent rows) vs the reference.

Interpreter: bf16 stores round differently there, so bf16 cases get a loose bound; fp16 cases a tight one.
small `nprog` forces several row blocks per program (the register double buffer and its tail)."""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels.int4 import reference as R
from qpass.kernels.int4.gemv import gemv4_config, gemv4_supported, w4a16_gemv4
from qpass.kernels.int4.w4a16 import w4a16_linear_triton

from kernels_util import rel_err

# (M, N, K, group, symmetric, dtype, one_chunk, nprog)
CASES = [
    (1, 64, 256, 128, True, torch.float16, True, 3),
    (1, 64, 256, 128, False, torch.float16, True, 2),
    (1, 33, 200, 32, True, torch.float16, True, 4),
    (1, 40, 300, 64, False, torch.float16, True, 3),
    (1, 72, 172, -1, True, torch.float16, True, 5),
    (1, 17, 1000, -1, False, torch.float16, True, 2),
    (1, 96, 512, 256, True, torch.float16, True, 7),
    (1, 50, 1024, 128, True, torch.float16, True, 1),
    (1, 8, 64, 32, False, torch.float16, True, 1),
    (1, 5, 96, 32, True, torch.float16, True, 2),
    (3, 40, 264, 64, True, torch.float16, True, 3),
    (5, 21, 520, 32, False, torch.float16, True, 2),
    (2, 64, 256, 128, True, torch.bfloat16, True, 3),
    (1, 33, 200, 32, False, torch.bfloat16, True, 2),
    (1, 40, 1100, 64, True, torch.float16, False, 3),
    (1, 19, 1030, 32, False, torch.float16, False, 2),
    (3, 24, 2048, 128, True, torch.float16, False, 4),
    (1, 36, 1500, -1, True, torch.float16, False, 2),
    (1, 36, 1500, -1, False, torch.float16, False, 5),
    (2, 9, 1056, 32, True, torch.bfloat16, False, 2),
    (1, 130, 128, 128, True, torch.float16, True, 6),
    (7, 12, 136, 32, False, torch.float16, True, 1),
]


def _make(M, N, K, G, sym, dtype):
    q, s, z = F.quantize_int4(torch.randn(N, K), G, sym)
    p = F.pack_int4(q)
    x = torch.randn(M, K).to(dtype)
    b = torch.randn(N).to(dtype)
    return x, p, s.to(dtype), (z.to(dtype) if z is not None else None), b


@pytest.mark.parametrize("M,N,K,G,sym,dtype,one,nprog", CASES)
def test_gemv4_matches_reference(M, N, K, G, sym, dtype, one, nprog):
    x, p, s, z, b = _make(M, N, K, G, sym, dtype)
    bias = b if N % 2 else None
    KW = p.shape[1] // 4
    if one:
        cfg, _ = gemv4_config(N, KW, block_n=4 if N > 16 else 2, num_warps=1)
    else:
        cfg = dict(BLOCK_N=4, BLOCK_KW=128, num_warps=1, ONE_CHUNK=False)
    assert cfg["ONE_CHUNK"] == one
    y = torch.full((M, N), float("nan"), dtype=dtype)
    w4a16_gemv4(x, p, s, z, bias, G, y, config=cfg, nprog=nprog)
    yr = R.w4a16_linear_ref(x, p, s, z, bias, G)
    assert torch.isfinite(y).all()
    assert rel_err(y, yr) < (2e-3 if dtype == torch.float16 else 1.5e-2)


def test_gemv4_fp32_accuracy():
    # the 1.0-magic decode cancels <= 12 bits: check against an fp64 product with an fp32 output
    x, p, s, z, _ = _make(1, 48, 2048, 128, True, torch.float16)
    y = torch.empty(1, 48, dtype=torch.float32)
    w4a16_gemv4(x, p, s, z, None, 128, y, config=dict(BLOCK_N=4, BLOCK_KW=256, num_warps=2, ONE_CHUNK=True), nprog=3)
    q = F.unpack_int4(p, 2048, signed=True)
    yr = x.double() @ F.dequantize_int4(q, s, None, 128).double().t()
    assert rel_err(y, yr) < 1e-4


def test_gemv4_dispatch():
    x, p, s, z, b = _make(1, 40, 256, 64, True, torch.float16)
    assert gemv4_supported(x, 256, 64) and not gemv4_supported(x, 256, 16)
    assert not gemv4_supported(x.float(), 256, 64)
    yr = R.w4a16_linear_ref(x, p, s, z, b, 64)
    assert rel_err(w4a16_linear_triton(x, p, s, z, b, 64), yr) < 2e-3  # M = 1 default path = gemv4
    assert rel_err(w4a16_linear_triton(x, p, s, z, b, 64, kernel="gemv4"), yr) < 2e-3
