"""The W4A8 / W4A4 decode GEMV on integer dot products (kernels/int8/gemv.py) against the reference."""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels.int8 import reference as R
from qpass.kernels.int8.gemv import w4a8_gemv_dp4a

from kernels_util import rel_err


def _case(M, N, K, G, zeros, a_bits, seed):
    g = torch.Generator().manual_seed(seed)
    lim = 2 ** (a_bits - 1)
    x = torch.randint(-lim, lim, (M, K), generator=g).to(torch.int8)
    x[0, :3] = torch.tensor([-lim, lim - 1, -lim])[:min(3, K)]  # the extremes of the codes
    groups = 1 if G <= 0 or G >= K else -(-K // G)
    ws = torch.rand(N, groups, generator=g) * 0.01 + 1e-3
    if zeros:  # plain nibbles [0, 15] with integer zero points
        q = torch.randint(0, 16, (N, K), generator=g).to(torch.int8)
        wz = torch.randint(0, 16, (N, groups), generator=g).float()
    else:
        q = torch.randint(-8, 8, (N, K), generator=g).to(torch.int8)
        wz = None
    return x, F.pack_int4(q), ws, wz


def _ref(x, p, ws, wz, xs, b, G):
    # the reference takes per-row steps as [N]
    K = x.shape[-1]
    per_row = G <= 0 or G >= K
    return R.w4a8_linear_ref(x, p, ws.reshape(-1) if per_row else ws, xs, b, torch.float32, 0 if per_row else G,
                             None, w_zero=None if wz is None else (wz.reshape(-1) if per_row else wz))


@pytest.mark.parametrize("M,N,K,G", [
    (1, 1, 32, 0), (1, 37, 100, 32), (1, 130, 264, 64), (2, 64, 256, 128), (3, 17, 8, 0), (1, 40, 1000, 96),
    (1, 9, 4104, 64), (2, 33, 520, 0), (5, 20, 128, 64), (9, 12, 264, 32),
])
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("a_bits", [8, 4])
def test_dp4a_gemv_matches_the_reference(M, N, K, G, zeros, a_bits):
    """Signed or zero-pointed nibbles, int8 or int4-valued activations, per-row or grouped steps, tails in N and
    K (K not a multiple of 8, of 32, of the group), M = 1 and a few rows."""
    x, p, ws, wz = _case(M, N, K, G, zeros, a_bits, seed=M * 1000 + N + K + G)
    xs = torch.rand(M) * 0.1 + 0.01
    b = torch.randn(N)
    y = torch.empty(M, N)
    w4a8_gemv_dp4a(x, p, ws, wz, b, G, y, x_scale=xs)
    assert rel_err(y, _ref(x, p, ws, wz, xs, b, G)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_dp4a_gemv_without_row_step_or_bias_and_16_bit_scales(dtype):
    """x_scale and bias are optional; steps and zero points may be 16-bit floats (read as they are)."""
    M, N, K, G = 1, 48, 192, 64
    x, p, ws, wz = _case(M, N, K, G, True, 8, seed=7)
    ws16, wz16 = ws.half(), wz.half()
    y = torch.empty(M, N, dtype=dtype)
    w4a8_gemv_dp4a(x, p, ws16, wz16, None, G, y)
    assert y.dtype == dtype
    ref = _ref(x, p, ws16.float(), wz16.float(), None, None, G)
    assert rel_err(y, ref) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("G", [0, 64])
def test_dp4a_gemv_in_k_chunks_equals_one_chunk(G):
    """The long-K path (x re-packed per chunk, several chunks per row) gives the one-chunk result."""
    M, N, K = 2, 11, 1000
    x, p, ws, wz = _case(M, N, K, G, G > 0, 8, seed=3)
    xs = torch.rand(M) + 0.5
    one = torch.empty(M, N)
    chunks = torch.empty(M, N)
    w4a8_gemv_dp4a(x, p, ws, wz, None, G, one, x_scale=xs)
    w4a8_gemv_dp4a(x, p, ws, wz, None, G, chunks, x_scale=xs,
                   config=dict(BLOCK_N=2, BLOCK_KW=16, num_warps=1, ONE_CHUNK=False))
    assert rel_err(chunks, one) < 1e-6
    assert rel_err(chunks, _ref(x, p, ws, wz, xs, None, G)) < 1e-5


@pytest.mark.parametrize("M,rows,one_chunk", [(1, 2, True), (3, 2, True), (5, 4, True), (8, 8, True), (11, 4, False),
                                               (16, 8, False), (2, 8, False)])
@pytest.mark.parametrize("zeros", [False, True])
def test_dp4a_gemv_several_rows_per_program(M, rows, one_chunk, zeros):
    """ROWS x rows per program (each word decoded once for all of them): row blocks with a tail (M not a multiple
    of ROWS, or fewer rows than ROWS), tails in N and K, one chunk or several, equal to the reference."""
    N, K, G = 13, 520, 64
    x, p, ws, wz = _case(M, N, K, G, zeros, 8, seed=M * 7 + rows)
    xs = torch.rand(M) * 0.1 + 0.01
    b = torch.randn(N)
    y = torch.full((M, N), float("nan"))
    cfg = dict(ROWS=rows, BLOCK_N=4, BLOCK_KW=128 if one_chunk else 16, num_warps=1, ONE_CHUNK=one_chunk)
    w4a8_gemv_dp4a(x, p, ws, wz, b, G, y, x_scale=xs, config=cfg)
    assert rel_err(y, _ref(x, p, ws, wz, xs, b, G)) < 1e-5


def test_dp4a_gemv_rows_per_program_by_batch():
    """The shipped launch: all rows in one program up to MAX_ROWS (a power of 2), then blocks of MAX_ROWS."""
    from qpass.kernels.int8.gemv import MAX_ROWS, dp4a_config, rows_per_program
    assert MAX_ROWS == 4 and [rows_per_program(m) for m in (1, 2, 3, 4, 5, 64)] == [1, 2, 4, 4, 4, 4]
    for rows in (1, 2, 4):
        for kw in (8, 512, 1792, 4096):
            cfg, per_sm = dp4a_config(kw, rows)
            assert cfg["ROWS"] == rows and per_sm >= 1 and cfg["BLOCK_KW"] >= (kw if cfg["ONE_CHUNK"] else 1)


def test_dp4a_gemv_sums_integers_exactly():
    """Extreme codes everywhere (x = -128, nibbles 15 against zero 0): the integer dot is exact, so a unit step
    gives the integer result to fp32's precision."""
    M, N, K = 1, 4, 256
    x = torch.full((M, K), -128, dtype=torch.int8)
    p = F.pack_int4(torch.full((N, K), 15, dtype=torch.int8))
    ws = torch.ones(N, 1)
    wz = torch.zeros(N, 1)
    y = torch.empty(M, N)
    w4a8_gemv_dp4a(x, p, ws, wz, None, 0, y)
    assert torch.equal(y, torch.full((M, N), -128.0 * 15 * K))

