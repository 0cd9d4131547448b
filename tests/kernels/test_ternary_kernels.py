"""Ternary trit-plane Triton kernels vs the reference."""
import pytest
import torch
import triton
import triton.language as tl

from qpass.kernels import formats as F
from qpass.kernels.ternary import reference as R
from qpass.kernels.ternary.unpack import trit_floats, trits
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
    for kernel in ("gemv4", "gemv2", "tc", "dequant"):  # the "gemv" variant: test_variants.py
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


def test_ternary_kernel_choice(monkeypatch):
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
    assert choose_kernel(torch.zeros(65, 4096, dtype=h), 128) == "tc"  # dequantize + cuBLAS: on CUDA only
    meta_x = torch.zeros(65, 4096, dtype=h, device="meta")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert choose_kernel(meta_x, 128) == "dequant" and choose_kernel(meta_x[:64], 128) == "tc"
    monkeypatch.undo()
    x, p1, p2, a1, a2, b = ternary_case(1, 8, 64, 16, h)
    with pytest.raises(ValueError, match="gemv4"):
        ternary_linear_triton(x, p1, p2, a1, a2, b, 16, kernel="gemv4")


@triton.jit
def _unpack_trits(w_ptr, f_ptr, i_ptr, R: tl.constexpr, C: tl.constexpr):
    r = tl.arange(0, R)[:, None]
    words = tl.load(w_ptr + r * C + tl.arange(0, C)[None, :])
    out = r * (16 * C) + tl.arange(0, 16 * C)[None, :]
    tl.store(f_ptr + out, trit_floats(words, f_ptr.dtype.element_ty))
    tl.store(i_ptr + out, trits(words))


def test_trit_floats_are_the_exact_trits():
    """ternary/unpack.py: both unpacks give formats.pack_trits' trits in pack order, exactly: every trit value in
    every position of a word (fp16 in the interpreter; bf16 runs compiled only: the interpreter's bf16 is wrong)."""
    cols, rows = torch.arange(64), torch.arange(4)[:, None]
    t = ((cols // 16 + cols % 16 + rows) % 3 - 1).to(torch.int8)  # word j, trit p: (j + p + row) % 3 - 1
    words = F.as_words(F.pack_trits(t))
    f = torch.empty(t.shape, dtype=torch.float16)
    i = torch.empty(t.shape, dtype=torch.int32)
    _unpack_trits[(1,)](words, f, i, t.shape[0], words.shape[1])
    assert torch.equal(f.float(), t.float()) and torch.equal(i, t.int())


@pytest.mark.parametrize("swap", [True, False])
@pytest.mark.parametrize("scale_after", [False, True])
@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("M,N,K,G", [(5, 72, 200, 64), (18, 40, 384, 32), (3, 48, 136, -1)])
@pytest.mark.parametrize("float_unpack", [True, False])
def test_ternary_tc_every_form(M, N, K, G, swap, scale_after, split, float_unpack):
    """Every form of the ternary tensor-core tile (ternary/tc.py): orientation, scales on the tile or on the two
    trit products, split-K (fp32 atomics + the bias after), K tails (K not a multiple of 16) and a group smaller than
    the configured K step, the trits unpacked to floats directly or through int32."""
    x, p1, p2, a1, a2, b = ternary_case(M, N, K, G, torch.float16)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, SPLIT_K=split, SWAP=swap, SCALE_AFTER=scale_after,
               FLOAT_UNPACK=float_unpack, num_warps=4, num_stages=2)
    y = ternary_linear_triton(x, p1, p2, a1, a2, b, G, config=cfg, kernel="tc")
    assert rel_err(y, R.ternary_linear_ref(x, p1, p2, a1, a2, b, G)) < 2e-3


@pytest.mark.parametrize("N,K,G", [(33, 200, 64), (16, 512, 32), (9, 172, -1), (40, 1024, 256), (5, 48, 16)])
def test_ternary_dequant_is_the_dense_weight(N, K, G):
    """ternary/dequant.py: a1*T1 + a2*T2 [N, K] from the packed planes, K tails (K not a multiple of 16), groups of
    one word, per-channel scales; fp32 output exact against the reference's dense weight."""
    from qpass.kernels.formats import norm_group
    from qpass.kernels.ternary.dequant import dequantize_ternary_triton
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K), G)
    Gn = norm_group(K, G)
    dense = (t1.float() * a1.repeat_interleave(Gn, dim=1)[:, :K] + t2.float() * a2.repeat_interleave(Gn, dim=1)[:, :K])
    out = dequantize_ternary_triton(F.pack_trits(t1), F.pack_trits(t2), a1, a2, Gn, K, torch.float32,
                                    config=dict(BLOCK_N=8, BLOCK_KW=4, num_warps=1))
    assert torch.equal(out, dense)
