"""The qpass:: custom ops: torch.library.opcheck (schema, fake, autograd registration, dispatch) on each."""
import pytest
import torch

import qpass.kernels.ops  # noqa: F401  (registers the ops)
from qpass.kernels import formats as F


def _w4a16_args(M=3, N=40, K=200, G=64, sym=False, dtype=torch.float32):
    q, s, z = F.quantize_int4(torch.randn(N, K), G, sym)
    return (torch.randn(M, K, dtype=dtype), F.pack_int4(q), s, z, torch.randn(N), G)


def _ternary_args(M=3, N=40, K=200, G=64):
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K), G)
    return (torch.randn(M, K), F.pack_trits(t1), F.pack_trits(t2), a1, a2, None, G)


def _int_args(w4, M=5, N=24, K=72):
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    w = F.pack_int4(w) if w4 else torch.randint(-128, 128, (N, K), dtype=torch.int8)
    return (x, w, torch.rand(N), torch.rand(M), torch.randn(N), torch.bfloat16)


CASES = {
    "w4a16": (torch.ops.qpass.w4a16_linear, _w4a16_args()),
    "w4a16_sym_perchannel": (torch.ops.qpass.w4a16_linear, _w4a16_args(M=1, G=-1, sym=True)),
    "ternary": (torch.ops.qpass.ternary_linear, _ternary_args()),
    "int8": (torch.ops.qpass.int8_linear, _int_args(False)),
    "w4a8": (torch.ops.qpass.w4a8_linear, _int_args(True)),
    # asymmetric weights: per-(row, group) zero points (group 32 at K = 72: a short last group), no x_zero
    "w4a8_w_zero": (torch.ops.qpass.w4a8_linear, _int_args(True)[:2] + (torch.rand(24, 3),) + _int_args(True)[3:]
                    + (32, None, torch.randint(0, 16, (24, 3)).float())),
    "int8_w_zero": (torch.ops.qpass.int8_linear, _int_args(False) + (0, None, torch.randint(-128, 128, (24,)).float())),
    "quant_dynamic": (torch.ops.qpass.quantize_activation_int8, (torch.randn(4, 33), None, 127)),
    "quant_static": (torch.ops.qpass.quantize_activation_int8, (torch.randn(4, 33), torch.tensor(0.05), 7)),
    # one row (a decode step) with an fp32 step: the returned step must be a copy, not a view of the input
    "quant_static_one_row": (torch.ops.qpass.quantize_activation_int8, (torch.randn(1, 33), torch.tensor([0.05]), 127)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_opcheck(name):
    op, args = CASES[name]
    torch.library.opcheck(op, args)


def test_ops_compile_fullgraph():
    args = _w4a16_args()

    def f(x):
        return torch.ops.qpass.w4a16_linear(x, *args[1:]) + 1

    out = torch.compile(f, backend="aot_eager", fullgraph=True)(args[0])
    assert torch.allclose(out, f(args[0]))
