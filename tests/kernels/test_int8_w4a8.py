"""int8 x int8 and W4A8/W4A4 (QSM) Triton kernels, and the activation quantizer, vs the references."""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels.int8 import reference as R
from qpass.kernels.int8 import persistent as P
from qpass.kernels.int8.gemm import INT8_CONFIGS, int8_linear_triton
from qpass.kernels.int8.quant_act import quantize_activation_int8_triton
from qpass.kernels.int8.w4a8 import w4a8_linear_triton

from kernels_util import rel_err

CASES = [  # (M, N, K, x_scale?, bias?, out dtype)
    (1, 64, 256, True, False, torch.float16),
    (1, 80, 200, False, True, torch.float32),
    (2, 40, 300, True, True, torch.float16),
    (3, 72, 172, False, False, torch.float16),
    (5, 96, 512, True, False, torch.float32),
    (7, 33, 100, True, True, torch.float16),
    (15, 128, 384, False, True, torch.float16),
    (16, 64, 256, True, False, torch.float16),
    (17, 100, 192, True, True, torch.float32),
    (31, 48, 160, False, False, torch.float16),
    (33, 96, 264, True, True, torch.float16),
    (63, 128, 256, True, False, torch.float16),
    (64, 64, 512, False, True, torch.float32),
    (65, 72, 136, True, True, torch.float16),
    (100, 200, 320, True, False, torch.float16),
    (127, 130, 264, False, True, torch.float16),
    (128, 256, 512, True, True, torch.float16),
    (1, 256, 1024, True, False, torch.float16),
    (9, 17, 8, True, True, torch.float16),
    (70, 300, 136, True, False, torch.float32),
]


def _scales(M, N, xs, bias):
    ws = torch.rand(N) * 0.01 + 1e-3
    x_s = torch.rand(M) * 0.1 + 0.01 if xs else None
    b = torch.randn(N) if bias else None
    return ws, x_s, b


@pytest.mark.parametrize("M,N,K,xs,bias,dtype", CASES)
def test_int8_linear(M, N, K, xs, bias, dtype):
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    ws, x_s, b = _scales(M, N, xs, bias)
    y = int8_linear_triton(x, w, ws, x_s, b, dtype)
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, R.int8_linear_ref(x, w, ws, x_s, b, dtype)) < 1e-3


SMALL_TILES = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=3)


@pytest.mark.parametrize("M,N,K,xs,bias,dtype", [c for c in CASES if c[2] % 16 == 0])  # TMA: 16-byte rows
@pytest.mark.parametrize("programs", [1, 3])  # every tile walked by one program, or tiles shared out
def test_int8_persistent(M, N, K, xs, bias, dtype, programs, monkeypatch):
    """The persistent TMA kernel (prefill sizes on CUDA) on awkward shapes: edge tiles read as zeros by the
    descriptors, K not a multiple of the tile, programs walking several tiles in grouped order."""
    monkeypatch.setattr(P, "persistent_programs", lambda device, blocks, per_sm: min(blocks, programs))
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    ws, x_s, b = _scales(M, N, xs, bias)
    y = P.int8_mm_persistent(x, w, ws, x_s, b, dtype, SMALL_TILES)
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, R.int8_linear_ref(x, w, ws, x_s, b, dtype)) < 1e-3


def test_int8_persistent_shipped_tile():
    """The shipped 256 x 128 x 128 tile itself, over two row tiles and an N tail."""
    M, N, K = 300, 136, 272
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    ws, x_s, b = _scales(M, N, True, True)
    assert rel_err(P.int8_mm_persistent(x, w, ws, x_s, b, torch.float16),
                   R.int8_linear_ref(x, w, ws, x_s, b, torch.float16)) < 1e-3


def test_int8_persistent_plan_takes_views_of_its_rows():
    """A plan's call gets x as the op got it ([1, M, K], or rows sliced out of wider ones): the descriptors use the
    plan's row strides, never the view's leading stride."""
    M, N, K = 40, 48, 64
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    ws, x_s, b = _scales(M, N, True, True)
    for x in (torch.randint(-128, 128, (1, M, K), dtype=torch.int8),
              torch.randint(-128, 128, (M, 2 * K), dtype=torch.int8)[:, K:]):
        x2 = x.reshape(-1, K)
        call = P.persistent_plan(M, N, K, x2.stride(0), w.stride(0), x.device, True, True, SMALL_TILES)
        y = call(x, w, ws, x_s, b, torch.empty(M, N, dtype=torch.float16))
        assert rel_err(y, R.int8_linear_ref(x2, w, ws, x_s, b, torch.float16)) < 1e-3


@pytest.mark.parametrize("block_n", [32, 64])
def test_int8_decode_narrow_tiles(block_n):
    """The N widths `decode_block_n` picks at <= 16 rows on CUDA, with an N tail."""
    M, N, K = 3, 100, 520
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    ws, x_s, b = _scales(M, N, True, True)
    y = int8_linear_triton(x, w, ws, x_s, b, torch.float16, config=dict(INT8_CONFIGS[0][1], BLOCK_N=block_n))
    assert rel_err(y, R.int8_linear_ref(x, w, ws, x_s, b, torch.float16)) < 1e-3


@pytest.mark.parametrize("M,N,K,xs,bias,dtype", CASES)
@pytest.mark.parametrize("a_bits", [8, 4])
def test_w4a8_linear(M, N, K, xs, bias, dtype, a_bits):
    lim = 1 << (a_bits - 1)
    x = torch.randint(-lim, lim, (M, K), dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    p = F.pack_int4(q)
    ws, x_s, b = _scales(M, N, xs, bias)
    y = w4a8_linear_triton(x, p, ws, x_s, b, dtype)
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, R.w4a8_linear_ref(x, p, ws, x_s, b, dtype)) < 1e-3
    # the integer product itself is exact
    if dtype == torch.float32 and not xs and not bias:
        exact = (x.double() @ q.double().t()) * ws.double()
        assert torch.allclose(y.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("N,K", [(48, 64), (17, 200), (64, 1000)])
@pytest.mark.parametrize("xs,bias,dtype", [(True, True, torch.float16), (False, False, torch.float32),
                                           (True, False, torch.bfloat16)])
@pytest.mark.parametrize("a_bits", [8, 4])
def test_w4a8_decode_gemv(N, K, xs, bias, dtype, a_bits):
    """One row through the W4A16 GEMV (the CUDA default at M = 1) against the reference."""
    lim = 1 << (a_bits - 1)
    x = torch.randint(-lim, lim, (1, 1, K), dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    p = F.pack_int4(q)
    ws, x_s, b = _scales(1, N, xs, bias)
    y = w4a8_linear_triton(x, p, ws, x_s, b, dtype, kernel="gemv")
    assert y.dtype == dtype and y.shape == (1, 1, N)
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32)
    assert rel_err(y.float(), ref) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("M,K", [(1, 64), (3, 200), (8, 4096), (5, 5000), (17, 100)])
@pytest.mark.parametrize("qmax", [127, 7])
@pytest.mark.parametrize("static", [False, True])
def test_quantize_activation(M, K, qmax, static):
    x = torch.randn(M, K, dtype=torch.float16) * 3
    scale = (torch.rand(M) * 0.05 + 0.01) if static else None
    q, s = quantize_activation_int8_triton(x, scale, qmax)
    qr, sr = R.quantize_activation_int8_ref(x, scale, qmax)
    assert q.dtype == torch.int8 and torch.equal(s, sr)
    diff = (q.int() - qr.int()).abs()
    assert int(diff.max()) <= 1 and diff.float().mean() < 1e-3  # a tie may round differently, never more
    assert int(q.max()) <= qmax and int(q.min()) >= -qmax - 1


@pytest.mark.parametrize("M,K", [(1, 64), (3, 200), (17, 100)])
@pytest.mark.parametrize("qmax", [127, 7])
@pytest.mark.parametrize("clip", [0.9, 0.6])
def test_quantize_activation_clipped(M, K, qmax, clip):
    """Dynamic steps of clip · max|x| / qmax: the largest values saturate at ±qmax (clipped, not wrapped)."""
    x = torch.randn(M, K, dtype=torch.float32) * 3
    q, s = quantize_activation_int8_triton(x, None, qmax, clip=clip)
    qr, sr = R.quantize_activation_int8_ref(x, None, qmax, clip=clip)
    assert torch.equal(s, sr) and torch.allclose(s, x.abs().amax(-1) * clip / qmax)
    diff = (q.int() - qr.int()).abs()
    assert int(diff.max()) <= 1 and diff.float().mean() < 1e-3  # a tie may round differently, never more
    assert int(q.max()) <= qmax and int(q.min()) >= -qmax - 1
    top = x.abs().argmax(-1)
    assert torch.equal(q.gather(-1, top[:, None]).squeeze(-1).int().abs(),
                       torch.where(x.gather(-1, top[:, None]).squeeze(-1) > 0, qmax, qmax + 1).int())


def test_quantize_activation_refuses_a_clip_with_a_static_step():
    with pytest.raises(ValueError, match="clip applies to dynamic steps"):
        quantize_activation_int8_triton(torch.randn(2, 8), torch.tensor(0.1), 127, clip=0.9)
    with pytest.raises(ValueError, match=r"clip must lie in \(0, 1\]"):
        quantize_activation_int8_triton(torch.randn(2, 8), None, 127, clip=1.5)


@pytest.mark.parametrize("M,N,K", [(5, 64, 256), (70, 48, 200), (9, 17, 8)])
def test_w4a8_in_register_unpack_variant(M, N, K):
    """UNPACK=1: the word of every (n, k) re-read and shifted by 4 * (k % 8) (no 3-D reshape)."""
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    p = F.pack_int4(q)
    ws, x_s, b = _scales(M, N, True, True)
    cfg = dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, GROUP_M=4, UNPACK=1, num_warps=4, num_stages=2)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, config=cfg)
    assert rel_err(y, R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32)) < 1e-5


# ------------------------------------------------------------------ per-group weight steps (QSM, grouped W4A8)
GROUPED = [  # (M, N, K, group): M = 1, tails in M, N and K, K not a multiple of the group or of the tile
    (1, 48, 256, 64), (3, 40, 200, 64), (17, 72, 320, 32), (33, 64, 384, 128), (70, 100, 136, 64),
    (5, 33, 96, 96), (2, 64, 512, 256),
]


def _grouped_case(M, N, K, G, w4):
    lim = 8 if w4 else 128
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    q = torch.randint(-lim, lim, (N, K), dtype=torch.int8)
    ws = torch.rand(N, (K + G - 1) // G) * 0.01 + 1e-3
    return x, q, ws, torch.rand(M) * 0.1 + 0.01, torch.randn(N)


@pytest.mark.parametrize("M,N,K,G", GROUPED)
@pytest.mark.parametrize("w4", [True, False])
def test_grouped_int_linear(M, N, K, G, w4):
    """Each K tile's int32 product scaled by its group's step equals the fp64 oracle sum_g s[n,g] X_g W_g^T."""
    x, q, ws, x_s, b = _grouped_case(M, N, K, G, w4)
    if w4:
        p = F.pack_int4(q)
        y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, group_size=G)
        ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, group_size=G)
    else:
        y = int8_linear_triton(x, q, ws, x_s, b, torch.float32, group_size=G)
        ref = R.int8_linear_ref(x, q, ws, x_s, b, torch.float32, group_size=G)
    s_full = ws.double().repeat_interleave(G, 1)[:, :K]
    exact = (x.double() @ (q.double() * s_full).t()) * x_s.double()[:, None] + b.double()
    assert torch.allclose(ref.double(), exact, rtol=1e-6, atol=1e-5)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("kernel", ["gemv", "unpack", "mma", "tc"])
def test_grouped_w4a8_every_kernel(kernel):
    """The decode GEMV (a few rows: batched decode) and the unpack-then-int8 path take the same per-group steps as
    the in-register one."""
    M = 3 if kernel == "gemv" else 6
    x, q, ws, x_s, b = _grouped_case(M, 40, 200, 64, True)
    p = F.pack_int4(q)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, group_size=64, kernel=kernel)
    assert rel_err(y, R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, group_size=64)) < 1e-5


@pytest.mark.parametrize("M,C,K", [(1, 64, 64), (3, 100, 128), (9, 50, 200), (20, 70, 100), (130, 50, 70)])
@pytest.mark.parametrize("qmax", [127, 7])
@pytest.mark.parametrize("per_row, dtype", [(False, torch.float32), (True, torch.float32), (False, torch.float16)])
def test_quantize_with_zero_and_gather(M, C, K, qmax, per_row, dtype):
    """Static step (one, or one per row) + per-column zero point + gather (sorted columns, split copies, zero pad)
    in one pass: the small-M tile kernel (1, 3, 9 rows), one row per program from quant_act._row_gather_min_m
    rows (20, 130)."""
    x = (torch.randn(M, C) * 4).to(dtype)
    gather = torch.cat([torch.randperm(C), torch.randint(0, C, (K - C - 3,)) if K - C > 3 else torch.empty(0, dtype=torch.long),
                        torch.full((max(0, min(3, K - C)),), C)])[:K].to(torch.int32)
    zero = torch.randint(-qmax, qmax, (K,)).float()
    step = torch.full((M,), 0.37) if per_row else torch.tensor(0.37)
    q, s = quantize_activation_int8_triton(x, step, qmax, zero, gather)
    qr, sr = R.quantize_activation_int8_ref(x, step, qmax, zero, gather)
    assert q.shape == (M, K) and torch.equal(s, sr)
    assert int((q.int() - qr.int()).abs().max()) <= 1
    # the oracle itself: the gathered column (0 for padding), rounded, shifted, clamped
    xg = torch.cat([x, torch.zeros(M, 1)], 1)[:, gather.clamp(max=C).long()]
    want = torch.clamp(torch.round(xg / 0.37) + zero, -qmax - 1, qmax)
    assert int((qr.float() - want).abs().max()) <= 1


@pytest.mark.parametrize("M,N,K,G", [(3, 40, 200, 64), (70, 64, 256, 32)])
@pytest.mark.parametrize("w4", [True, False])
@pytest.mark.parametrize("zero", [False, True])
def test_dequant_then_float_gemm_path(M, N, K, G, w4, zero):
    """The prefill path of per-group steps (weight dequantized once, then a float GEMM) against the oracle."""
    from qpass.kernels.int8.dequant_mm import dequant_mm

    x, q, ws, x_s, b = _grouped_case(M, N, K, G, w4)
    xz = torch.randint(-100, 100, (K,)).float() if zero else None
    w = F.pack_int4(q) if w4 else q
    y = dequant_mm(x, w, ws, x_s, b, torch.float32, G, xz, w4)
    ref = (R.w4a8_linear_ref if w4 else R.int8_linear_ref)(x, w, ws, x_s, b, torch.float32, G, xz)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("M", [1, 5, 33])
@pytest.mark.parametrize("G", [0, 64])
def test_zero_points_are_subtracted_exactly(M, G):
    """x_zero: (x - z) W^T with large zero points (A8 asymmetric) — exact integer handling, every kernel."""
    x, q, ws, x_s, b = _grouped_case(M, 48, 256, 64, True)
    ws = ws if G else ws[:, 0].contiguous()
    xz = torch.randint(-120, 120, (256,)).float()
    p = F.pack_int4(q)
    ref = R.w4a8_linear_ref(x, p, ws, None, b, torch.float32, G, xz)
    kernels = ["mma"] + (["gemv"] if M <= 16 else [])
    for kernel in kernels:
        y = w4a8_linear_triton(x, p, ws, None, b, torch.float32, G, xz, kernel=kernel)
        assert rel_err(y, ref) < 1e-6, kernel
    y8 = int8_linear_triton(x, q, ws, None, b, torch.float32, G, xz)
    assert rel_err(y8, R.int8_linear_ref(x, q, ws, None, b, torch.float32, G, xz)) < 1e-6


# ------------------------------------------------------------------ asymmetric weights (per-row / per-group zeros)
def _asym_case(M, N, K, G, w4, seed=0):
    """int8 activation codes, weight codes with their zero points (int4: plain nibbles [0, 15] and zeros in
    [0, 15]; int8: codes and zeros in [-128, 127], the shifted form of [0, 255]) and steps [N] or [N, groups]."""
    g = torch.Generator().manual_seed(seed)
    ng = (K + G - 1) // G if 0 < G < K else 1
    lo, hi = (0, 16) if w4 else (-128, 128)
    x = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)
    q = torch.randint(lo, hi, (N, K), generator=g, dtype=torch.int8)
    wz = torch.randint(lo, hi, (N, ng), generator=g).float()
    ws = torch.rand(N, ng, generator=g) * 0.01 + 1e-3
    if G <= 0:  # per-row: [N]
        wz, ws = wz[:, 0].contiguous(), ws[:, 0].contiguous()
    return x, q, ws, wz, torch.rand(M, generator=g) * 0.1 + 0.01, torch.randn(N, generator=g)


def _asym_exact(x, q, ws, wz, G, xz=None):
    """The oracle written out: sum_g s[n, g] (x - xz)_g (q - z[n, g])_g^T in fp64, independent of the reference."""
    K = x.shape[-1]
    grouped = 0 < G < K
    s = ws.double().repeat_interleave(G, 1)[:, :K] if grouped else ws.double().reshape(-1, 1)
    z = wz.double().repeat_interleave(G, 1)[:, :K] if grouped else wz.double().reshape(-1, 1)
    xd = x.double() - (xz.double() if xz is not None else 0)
    return xd @ ((q.double() - z) * s).t()


ASYM = [  # (M, N, K, group): M = 1, tails in M, N and K, K not a multiple of the group or of the tile, per-row
    (1, 48, 256, 64), (3, 40, 200, 64), (17, 72, 320, 32), (33, 64, 384, 128), (70, 100, 136, 64),
    (5, 33, 96, 96), (2, 64, 512, 256), (9, 17, 8, 0), (65, 72, 136, 0), (1, 80, 200, 0),
]


@pytest.mark.parametrize("M,N,K,G", ASYM)
@pytest.mark.parametrize("w4", [True, False])
@pytest.mark.parametrize("x_zero", [False, True])
def test_asymmetric_weights_int_linear(M, N, K, G, w4, x_zero):
    """Weight zero points (the row sum of the activation codes per K tile times the zero, in int32) with and
    without activation zero points: the kernel equals the reference, and the reference the written-out oracle."""
    x, q, ws, wz, x_s, b = _asym_case(M, N, K, G, w4)
    xz = torch.randint(-100, 100, (K,)).float() if x_zero else None
    exact = _asym_exact(x, q, ws, wz, G, xz) * x_s.double()[:, None] + b.double()
    if w4:
        p = F.pack_int4(q)
        ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
        y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
    else:
        ref = R.int8_linear_ref(x, q, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
        y = int8_linear_triton(x, q, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
    assert torch.allclose(ref.double(), exact, rtol=1e-6, atol=1e-4)
    assert rel_err(y, ref) < 1e-6
    # the zeros matter: the symmetric reading of the same codes is far off
    sym = (R.w4a8_linear_ref(x, F.pack_int4(q - 8), ws, x_s, b, torch.float32, G, xz) if w4 else
           R.int8_linear_ref(x, q, ws, x_s, b, torch.float32, G, xz))
    assert rel_err(sym, ref) > 1e-2


@pytest.mark.parametrize("kernel", ["gemv", "unpack", "mma", "dequant"])
@pytest.mark.parametrize("G", [0, 32, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_asymmetric_w4a8_every_kernel(kernel, G, dtype):
    """Every W4A8 path (decode GEMV, unpack-then-int8, in-register unpack, dequantize-then-float GEMM) takes the
    weight zero points, with activation zero points, at fp16 and fp32 outputs."""
    M = 2 if kernel == "gemv" else 6
    x, q, ws, wz, x_s, b = _asym_case(M, 40, 264, G, True, seed=G)
    xz = torch.randint(-60, 60, (264,)).float()
    p = F.pack_int4(q)
    y = w4a8_linear_triton(x, p, ws, x_s, b, dtype, G, xz, kernel=kernel, w_zero=wz)
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
    assert y.dtype == dtype
    assert rel_err(y, ref) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("M,N,K,G", [(5, 64, 256, 0), (70, 48, 200, 64), (9, 17, 8, 0)])
def test_asymmetric_w4a8_in_register_unpack_variant(M, N, K, G):
    """UNPACK=1 reads plain nibbles too when the weight has zero points."""
    x, q, ws, wz, x_s, b = _asym_case(M, N, K, G, True)
    p = F.pack_int4(q)
    cfg = dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64 if G else 32, GROUP_M=4, UNPACK=1, num_warps=4, num_stages=2)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, G, config=cfg, w_zero=wz)
    assert rel_err(y, R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, w_zero=wz)) < 1e-6


@pytest.mark.parametrize("w4", [True, False])
def test_asymmetric_dequant_then_float_gemm_path(w4):
    from qpass.kernels.int8.dequant_mm import dequant_mm

    x, q, ws, wz, x_s, b = _asym_case(70, 64, 256, 32, w4)
    xz = torch.randint(-100, 100, (256,)).float()
    w = F.pack_int4(q) if w4 else q
    y = dequant_mm(x, w, ws, x_s, b, torch.float32, 32, xz, w4, wz)
    ref = (R.w4a8_linear_ref if w4 else R.int8_linear_ref)(x, w, ws, x_s, b, torch.float32, 32, xz, w_zero=wz)
    assert rel_err(y, ref) < 1e-5


# ------------------------------------------------------------------ integer group steps (numerics.integer_group_steps)
@pytest.mark.parametrize("kernel", ["gemv", "unpack", "mma", "dequant"])
@pytest.mark.parametrize("M,N,K,G", [(1, 40, 264, 64), (6, 40, 264, 64), (17, 33, 200, 32), (9, 72, 512, 128)])
@pytest.mark.parametrize("asym", [False, True])
def test_integer_group_steps_every_kernel(kernel, M, N, K, G, asym):
    """Group steps = row step x u (u in [1, 8] with zeros, [1, 16] without): given w_step, "unpack" forms the
    int8 values (q - z) * u once and runs one int8 GEMM with the row steps; every path equals the reference (which
    reads the group steps alone) and the written-out oracle, tails in K included."""
    if kernel == "gemv" and M > 16:  # a GEMV takes a few rows
        M = 1
    g = torch.Generator().manual_seed(M * 7 + G)
    ng = (K + G - 1) // G
    limit = 8 if asym else 16
    row = torch.rand(N, generator=g) * 1e-3 + 1e-4
    ws = row[:, None] * torch.randint(1, limit + 1, (N, ng), generator=g).float()
    ws[:, 0] = row * limit  # the largest multiple present, as the quantizer makes it
    q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.int8) if asym else \
        torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
    wz = torch.randint(0, 16, (N, ng), generator=g).float() if asym else None
    x = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)
    x_s, b = torch.rand(M, generator=g) * 0.1 + 0.01, torch.randn(N, generator=g)
    p = F.pack_int4(q)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, G, kernel=kernel, w_zero=wz, w_step=row)
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, w_zero=wz)
    exact = _asym_exact(x, q, ws, wz if asym else torch.zeros(N, ng), G) * x_s.double()[:, None] + b.double()
    assert torch.allclose(ref.double(), exact, rtol=1e-6, atol=1e-4)
    assert rel_err(y, ref) < 1e-5


def test_integer_steps_unpack_writes_the_scaled_int8_values():
    """The one-pass unpack with row steps writes (q - z) * (s / r) as int8, for both the flat and the 2-D kernel."""
    from qpass.kernels.int4.dequant import dequantize_int4_triton

    g = torch.Generator().manual_seed(3)
    for K in (256, 200):  # K % 8 == 0: the flat kernel; else the 2-D one
        N, G = 24, 64
        ng = (K + G - 1) // G
        row = torch.rand(N, generator=g) + 0.1
        u = torch.randint(1, 9, (N, ng), generator=g).float()
        q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.int8)
        z = torch.randint(0, 16, (N, ng), generator=g).float()
        out = dequantize_int4_triton(F.pack_int4(q), row[:, None] * u, z, G, K, torch.int8, int_out=True,
                                     row_steps=row)
        want = (q.float() - z.repeat_interleave(G, 1)[:, :K]) * u.repeat_interleave(G, 1)[:, :K]
        assert out.dtype == torch.int8 and torch.equal(out.float(), want)


def test_w_step_needs_groups():
    x = torch.randint(-8, 8, (2, 128), dtype=torch.int8)
    p = F.pack_int4(torch.randint(-8, 8, (16, 128), dtype=torch.int8))
    with pytest.raises(ValueError, match="w_step"):
        w4a8_linear_triton(x, p, torch.rand(16), None, None, torch.float32, 0, w_step=torch.rand(16))


@pytest.mark.parametrize("M,N,K,G", [(1, 48, 256, 64), (3, 40, 200, 64), (17, 72, 320, 32), (6, 33, 264, 0)])
@pytest.mark.parametrize("split", [2, 3, 8])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_split_k_sums_the_same_product(M, N, K, G, split, asym, dtype):
    """SPLIT_K > 1 (small M: more programs than N tiles alone give): each split's fp32 share (K tiles inside their
    groups, the zero points' shares of its own tiles, the row's step) is added into a zeroed buffer, the bias once
    after; K not a multiple of the split, more splits than K tiles (8 x 64 > 320) included."""
    x, q, ws, wz, x_s, b = _asym_case(M, N, K, G, True, seed=split)
    xz = torch.randint(-60, 60, (K,)).float() if asym else None
    wz = wz if asym else None
    p = F.pack_int4(q if asym else q - 8)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64 if G else 32, GROUP_M=8, SPLIT_K=split, num_warps=4, num_stages=2)
    y = w4a8_linear_triton(x, p, ws, x_s, b, dtype, G, xz, config=cfg, w_zero=wz)
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, xz, w_zero=wz)
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, ref) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("M,N,K,G", [case for case in ASYM if case[3] % 16 == 0])
@pytest.mark.parametrize("zeros", [True, False])
@pytest.mark.parametrize("steps", [True, False])
def test_w4a8_tc_kernel(M, N, K, G, zeros, steps):
    """W4A16's tensor-core tile on the int8 codes (w4a8.py "tc"): asymmetric or signed weights, per-group or
    per-row steps, with and without per-row activation steps, equal to the reference."""
    x, q, ws, wz, x_s, b = _asym_case(M, N, K, G, True)
    x_s = x_s if steps else None
    p = F.pack_int4(q) if zeros else F.pack_int4(q - 8)
    wz = wz if zeros else None
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, None, w_zero=wz)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, G, w_zero=wz, kernel="tc")
    assert rel_err(y, ref) < 1e-5


def test_w4a8_tc_kernel_refuses_activation_zeros():
    x, q, ws, wz, x_s, b = _asym_case(3, 40, 128, 64, True)
    with pytest.raises(ValueError, match="x_zero"):
        w4a8_linear_triton(x, F.pack_int4(q), ws, x_s, b, torch.float32, 64, torch.zeros(128), w_zero=wz, kernel="tc")


@pytest.mark.parametrize("M,N,K,G", [(3, 40, 256, 128), (20, 72, 300, 0), (9, 64, 384, 128), (8, 48, 320, 64),
                                     (1, 20, 192, 64)])
@pytest.mark.parametrize("zeros", [True, False])
def test_w4a8_tc_planes(M, N, K, G, zeros):
    """The W4A8 codes on the nibble-plane K step of the tensor-core tile (int4/tc.py PLANES), per-group (64: two
    groups per step) and per-row steps, asymmetric and signed weights."""
    x, q, ws, wz, x_s, b = _asym_case(M, N, K, G, True)
    p = F.pack_int4(q) if zeros else F.pack_int4(q - 8)
    wz = wz if zeros else None
    cfg = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, SPLIT_K=2, PLANES=True, num_warps=4, num_stages=2)
    ref = R.w4a8_linear_ref(x, p, ws, x_s, b, torch.float32, G, None, w_zero=wz)
    y = w4a8_linear_triton(x, p, ws, x_s, b, torch.float32, G, w_zero=wz, kernel="tc", config=cfg)
    assert rel_err(y, ref) < 1e-5


def test_w4a8_kernel_by_rows(monkeypatch):
    """Grouped weights on CUDA: the decode GEMV (several rows per program) up to GEMV_MAX_M rows, the int8 tile to
    16, W4A16's split-K tile ("tc") at 17-32 unless activation zero points are given, the int8 tile again to
    DEQUANT_MIN_M; per-row weights never take "tc"; off CUDA always the int8 tile."""
    from qpass.kernels.int8.w4a8 import choose_kernel
    x = torch.zeros(40, 4096, dtype=torch.int8, device="meta")
    assert choose_kernel(x[:24], 64) == "mma"
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert [choose_kernel(x[:m], 64) for m in (1, 2, 4, 5, 16, 17, 32, 33)] == \
        ["gemv", "gemv", "gemv", "mma", "mma", "tc", "tc", "mma"]
    zeros = torch.zeros(4096)
    assert [choose_kernel(x[:m], 64, x_zero=zeros) for m in (1, 2, 8, 24)] == ["gemv", "mma", "mma", "mma"]
    assert choose_kernel(x[:24], 0) == "mma" and choose_kernel(x[:24], 8) == "mma"
