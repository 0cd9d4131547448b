"""Split-K reduced inside the kernel (kernels/split_k.py): each program stores its partial, the last of a tile's
programs sums them, writes the output and puts the tile's counter back to zero.

The counters are shared by every launch on a stream, so a launch that left one non-zero would make a later one
skip its output (torch.empty: garbage). These tests run each split-K kernel several times in a row on fresh
inputs, each against its reference, and check that every counter is zero afterwards.
"""
import pytest
import torch

from qpass.kernels import formats as F
from qpass.kernels import split_k
from qpass.kernels.int4 import reference as R4
from qpass.kernels.int4.tc import w4a16_tc
from qpass.kernels.int8 import reference as R8
from qpass.kernels.int8.gemm import int_mm
from qpass.kernels.ternary.reference import ternary_linear_ref
from qpass.kernels.ternary.tc import ternary_tc

from kernels_util import rel_err, ternary_case, w4a16_case

TILE = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=2)


def _counters_are_zero():
    return not split_k.counters(torch.device("cpu")).any()


@pytest.mark.parametrize("split", [2, 5])
@pytest.mark.parametrize("M,N,K,G,bias", [(3, 40, 320, 64, True), (17, 72, 200, -1, False)])
def test_w4a16_tile_split_k_every_call(M, N, K, G, bias, split):
    _, p, s, z, b = w4a16_case(M, N, K, G, False, torch.float16, bias)
    Gn = K if G <= 0 else G
    for seed in range(3):
        x = torch.randn(M, K, generator=torch.Generator().manual_seed(seed)).half()
        y = w4a16_tc(x, p, s, z, b, Gn, torch.empty(M, N, dtype=torch.float16), dict(TILE, SPLIT_K=split))
        assert rel_err(y, R4.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3
    assert _counters_are_zero()


def test_ternary_tile_split_k_every_call():
    M, N, K, G = 5, 48, 256, 64
    _, t1, t2, a1, a2, b = ternary_case(M, N, K, G, torch.float16)
    for seed in range(3):
        x = torch.randn(M, K, generator=torch.Generator().manual_seed(seed)).half()
        y = ternary_tc(x, t1, t2, a1, a2, b, G, torch.empty(M, N, dtype=torch.float16), dict(TILE, SPLIT_K=3))
        assert rel_err(y, ternary_linear_ref(x, t1, t2, a1, a2, b, G)) < 2e-3
    assert _counters_are_zero()


@pytest.mark.parametrize("G,int_steps", [(0, False), (64, False), (64, True)])
def test_int8_tile_split_k_every_call(G, int_steps):
    """The int8 / W4A8 tile (per-row steps, float group steps, QSM's integer group steps) split four ways."""
    M, N, K = 6, 40, 384
    g = torch.Generator().manual_seed(G + int_steps)
    q = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int32)
    p = F.pack_int4(q)
    row = torch.rand(N, generator=g) * 1e-2 + 1e-3
    if G:  # integer multiples of the row step (any float steps for the float path)
        ws = row[:, None] * torch.randint(1, 17, (N, K // G), generator=g).float()
    else:
        ws = row
    b = torch.randn(N, generator=g)
    cfg = dict(TILE, GROUP_M=8, SPLIT_K=4)
    for _ in range(3):
        x = torch.randint(-127, 128, (M, K), generator=g, dtype=torch.int8)
        xs = torch.rand(M, generator=g) * 1e-2
        y = int_mm(x, p, ws, xs, b, torch.float32, True, cfg, G, w_step=row if int_steps else None)
        ref = R8.w4a8_linear_ref(x, p, ws, xs, b, torch.float32, G)
        assert rel_err(y, ref) < 1e-5
    assert _counters_are_zero()


def test_the_counters_are_per_stream_and_zero():
    c = split_k.counters(torch.device("cpu"))
    assert c is split_k.counters(torch.device("cpu")) and c.dtype == torch.int32 and not c.any()


def test_a_launch_with_more_tiles_than_counters_is_refused():
    with pytest.raises(ValueError, match="tile counters"):
        split_k.check_tiles(split_k.COUNTERS_PER_STREAM + 1)
