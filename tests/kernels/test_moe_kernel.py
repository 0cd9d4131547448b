"""qpass::moe_w4a16: the grouped Triton kernel (interpreter) and the op against the pure-torch reference, and
the reference against a dense per-expert computation from the codes."""
import pytest
import torch

import qpass.kernels.ops  # noqa: F401
from qpass.kernels.formats import pack_int4
from qpass.kernels.moe.grouped import moe_w4a16_triton
from qpass.kernels.moe.reference import moe_linear_ref, moe_w4a16_ref
from qpass.numerics import quantize_weight


def _experts(E, N, K, group, symmetric, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(E, N, K, generator=g)
    qw = quantize_weight(w.reshape(E * N, K), 4, group or None, symmetric)
    packed = pack_int4(qw.qweight).reshape(E, N, -1)
    ng = qw.scale.shape[1]
    scales = qw.scale.reshape(E, N, ng)
    zeros = None if qw.zero is None else qw.zero.reshape(E, N, ng)
    return qw.dequantize().reshape(E, N, K), packed, scales, zeros


def _dense(x, w, counts):
    out, start = [], 0
    for e, c in enumerate(counts):
        out.append(x[start:start + c].float() @ w[e].t())
        start += c
    tail = x.shape[0] - start  # rows routed to no expert
    out.append(torch.zeros(tail, w.shape[1]))
    return torch.cat(out)


CASES = [  # E, N, K, group, counts per expert (0 = an expert without rows), extra unrouted rows
    (4, 48, 64, 32, [1, 0, 0, 0], 0),  # one token
    (4, 40, 100, 32, [3, 0, 5, 2], 0),  # K not a multiple of the tile or the group; N tail
    (3, 33, 72, 0, [0, 4, 0], 0),  # per-channel, empty experts first and last
    (2, 16, 64, 64, [2, 3], 2),  # rows past offs[-1] (not routed) come out zero
]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("E,N,K,group,counts,extra", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_and_reference(E, N, K, group, counts, extra, symmetric, dtype):
    w, packed, scales, zeros = _experts(E, N, K, group, symmetric)
    S = sum(counts) + extra
    x = torch.randn(S, K).to(dtype)
    offs = torch.cumsum(torch.tensor(counts), 0).to(torch.int32)
    want = _dense(x, w, counts)
    ref = moe_w4a16_ref(x, packed, scales, zeros, offs, group)
    tri = moe_w4a16_triton(x, packed, scales, zeros, offs, group)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.float16 else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ref.float(), want, **tol)
    torch.testing.assert_close(tri.float(), want, **tol)
    op = torch.ops.qpass.moe_w4a16(x, packed, scales, zeros, offs.long(), group)
    torch.testing.assert_close(op, ref)
    assert want.abs().sum() > 0


def test_moe_linear_reference():
    w = torch.randn(3, 8, 16)
    x = torch.randn(5, 16)
    offs = torch.tensor([2, 2, 5])
    torch.testing.assert_close(moe_linear_ref(x, w, offs), _dense(x, w, [2, 0, 3]))
    torch.testing.assert_close(torch.ops.qpass.moe_linear(x, w, offs), _dense(x, w, [2, 0, 3]))


def test_bad_arguments():
    w, packed, scales, zeros = _experts(2, 8, 32, 16, True)
    x = torch.randn(3, 32)
    with pytest.raises(RuntimeError, match="bytes per row"):
        torch.ops.qpass.moe_w4a16(torch.randn(3, 48), packed, scales, zeros, torch.tensor([1, 3]), 16)
    with pytest.raises(ValueError, match="offs must be int32 or int64"):
        torch.ops.qpass.moe_w4a16(x, packed, scales, zeros, torch.tensor([1.0, 3.0]), 16)
    with pytest.raises(RuntimeError, match=r"offs must be \[E\]"):
        torch.ops.qpass.moe_w4a16(x, packed, scales, zeros, torch.tensor([1, 2, 3]), 16)
