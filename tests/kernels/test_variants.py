"""The kernels that lost to the shipped ones and live in benchmarks/variants/ (the benchmarks compare against
them) still compute the reference (interpreter)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from qpass.kernels.int4 import reference as R4
from qpass.kernels.sale import reference as RS
from qpass.kernels.ternary import reference as RT

from kernels_util import rel_err, ternary_case, w4a16_case

VARIANTS = Path(__file__).resolve().parents[2] / "benchmarks" / "variants"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"variants_{name}", VARIANTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


W, T, A = _load("w4a16_variants"), _load("ternary_variants"), _load("sale_attn_v1")


class R:  # the references the moved tests call
    w4a16_linear_ref = staticmethod(R4.w4a16_linear_ref)
    ternary_linear_ref = staticmethod(RT.ternary_linear_ref)


@pytest.mark.parametrize("M,N,K,G,sym", [(1, 64, 200, 64, True), (4, 48, 256, 128, False), (1, 40, 172, -1, False)])
def test_w4a16_gemv_variant_any_m(M, N, K, G, sym):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, torch.float16)
    assert rel_err(W.w4a16_variant(x, p, s, z, b, G, kernel="gemv"), R.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3


@pytest.mark.parametrize("M,N,K,G,sym,unpack", [(3, 40, 200, 64, True, 0), (5, 33, 256, -1, False, 1),
                                                 (2, 48, 192, 32, False, 0), (4, 64, 256, 128, True, 1)])
def test_w4a16_fused_mm(M, N, K, G, sym, unpack):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, torch.float16)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_M=2, UNPACK=unpack, num_warps=4, num_stages=2)
    y = W.w4a16_variant(x, p, s, z, b, G, kernel="mm", config=cfg)
    assert rel_err(y, R.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3


@pytest.mark.parametrize("M,N,K,G,sym", [(1, 64, 200, 64, True), (2, 40, 172, -1, False), (1, 96, 256, 32, False)])
def test_w4a16_gemv3_variant(M, N, K, G, sym):
    x, p, s, z, b = w4a16_case(M, N, K, G, sym, torch.float16)
    assert rel_err(W.w4a16_variant(x, p, s, z, b, G, kernel="gemv3"), R.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3


@pytest.mark.parametrize("M,N,K,G", [(1, 64, 200, 64), (3, 48, 256, 128), (1, 40, 172, -1)])
def test_ternary_gemv_variant_any_m(M, N, K, G):
    x, p1, p2, a1, a2, b = ternary_case(M, N, K, G, torch.float16)
    yr = R.ternary_linear_ref(x, p1, p2, a1, a2, b, G)
    assert rel_err(T.ternary_variant(x, p1, p2, a1, a2, b, G, kernel="gemv"), yr) < 2e-3


@pytest.mark.parametrize("M,N,K,G", [(1, 64, 200, 64), (2, 40, 172, -1), (1, 96, 256, 32)])
def test_ternary_gemv3_variant(M, N, K, G):
    x, p1, p2, a1, a2, b = ternary_case(M, N, K, G, torch.float16)
    yr = R.ternary_linear_ref(x, p1, p2, a1, a2, b, G)
    assert rel_err(T.ternary_variant(x, p1, p2, a1, a2, b, G, kernel="gemv3"), yr) < 2e-3


def test_sale_attention_v1_matches_reference():
    g = torch.Generator().manual_seed(2)
    H, Hkv, S, D, bm, bn = 2, 1, 200, 64, 64, 64
    q, k, v = (torch.randn(1, h, S, D, generator=g) for h in (H, Hkv, Hkv))
    nqb, nkb, causal, always = RS.block_layout(S, bm, bn, 64, 64)
    mask = always | (causal & (torch.rand(1, H, nqb, nkb, generator=g) < 0.5))
    idx, cnt = RS.mask_to_index(mask)
    got = A.sale_sparse_attention_v1(q, k, v, idx, cnt, D ** -0.5, bm, bn)
    torch.testing.assert_close(got, RS.sale_attention_ref(q, k, v, mask, D ** -0.5, bm, bn), rtol=1e-4, atol=1e-4)
