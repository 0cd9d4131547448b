"""W8A16 Triton kernel (int8 weights, per-row or per-group steps, float activations) vs the reference, and the
qpass::w8a16_linear op (CPU: the reference) with its fake and argument checks."""
import pytest
import torch

from qpass.kernels.int8 import reference as R
from qpass.kernels.int8.w8a16 import supported_group, w8a16_linear_triton
import qpass.kernels.ops  # noqa: F401  (registers qpass::w8a16_linear)

from kernels_util import rel_err


def w8a16_case(M, N, K, G, dtype, bias=True, seed=0):
    """(x, int8 weight [N, K], steps [N, groups], bias or None) of a random symmetric W8A16 linear."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    Gn = K if G <= 0 or G >= K else G
    ng = -(-K // Gn)
    wp = torch.nn.functional.pad(w, (0, ng * Gn - K)).reshape(N, ng, Gn)
    s = wp.abs().amax(-1).clamp_min(1e-8) / 127
    q = torch.round(wp / s[..., None]).clamp(-128, 127).reshape(N, ng * Gn)[:, :K].to(torch.int8)
    x = torch.randn(M, K, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    return x, q, s.to(dtype), b


# (M, N, K, group, dtype): M = 1, odd M, M across every config bucket, N tails, K tails (K % BLOCK_K, K % G),
# per-row (-1 and G >= K) and groups 16 / 32 / 64 / 128 / 256 / 384
CASES = [
    (1, 64, 256, -1, torch.float32),
    (1, 80, 200, 64, torch.float16),
    (1, 33, 100, 32, torch.float32),
    (2, 64, 256, 128, torch.float16),
    (3, 40, 300, 16, torch.float32),
    (5, 72, 172, -1, torch.float16),
    (7, 96, 384, 384, torch.float32),
    (16, 64, 512, 256, torch.float16),
    (17, 100, 192, 64, torch.float32),
    (33, 48, 160, 32, torch.float16),
    (64, 128, 136, 500, torch.float32),
    (65, 72, 320, 128, torch.float16),
    (130, 50, 264, 64, torch.float32),
]


@pytest.mark.parametrize("M,N,K,G,dtype", CASES)
def test_w8a16_kernel_matches_reference(M, N, K, G, dtype):
    x, q, s, b = w8a16_case(M, N, K, G, dtype, bias=M % 2 == 1)
    y = w8a16_linear_triton(x, q, s, b, G)
    yr = R.w8a16_linear_ref(x, q, s, b, G)
    assert y.shape == (M, N) and y.dtype == dtype
    assert yr.abs().max() > 0
    assert rel_err(y, yr) < (1e-5 if dtype == torch.float32 else 2e-3)


def test_w8a16_reference_is_the_dequantized_linear():
    """The oracle itself: x @ (q * s per group)^T, against an explicit loop over groups."""
    x, q, s, b = w8a16_case(3, 24, 100, 32, torch.float32)
    w = torch.cat([q[:, g * 32:(g + 1) * 32].float() * s[:, g:g + 1] for g in range(4)], dim=1)
    assert rel_err(R.w8a16_linear_ref(x, q, s, b, 32), x @ w.t() + b) < 1e-6


def test_w8a16_3d_input_and_strided_weight():
    x, q, s, b = w8a16_case(6, 64, 128, 64, torch.float16)
    qt = q.t().contiguous().t()  # same values, column-major: the launcher must not read it as row-major
    y = w8a16_linear_triton(x.view(2, 3, 128), qt, s, b, 64)
    assert y.shape == (2, 3, 64)
    assert rel_err(y.reshape(6, 64), R.w8a16_linear_ref(x, q, s, b, 64)) < 2e-3


def test_w8a16_op_and_fake():
    x, q, s, b = w8a16_case(4, 40, 96, 32, torch.float32)
    y = torch.ops.qpass.w8a16_linear(x, q, s, b, 32)
    assert torch.equal(y, R.w8a16_linear_ref(x, q, s, b, 32))  # CPU runs the reference
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fy = torch.ops.qpass.w8a16_linear(*(mode.from_tensor(t) for t in (x, q, s, b)), 32)
    assert fy.shape == (4, 40) and fy.dtype == torch.float32
    torch.library.opcheck(torch.ops.qpass.w8a16_linear.default, (x, q, s, b, 32))


@pytest.mark.parametrize("change, message", [
    (dict(q=lambda q: q.to(torch.int16)), "w_int8 must be"),
    (dict(q=lambda q: q[:, :-1]), "w_int8 is"),
    (dict(s=lambda s: s[:, :1]), "scales"),
    (dict(b=lambda b: b[:-1]), "bias"),
    (dict(x=lambda x: x.to(torch.int32)), "x must be"),
])
def test_w8a16_bad_arguments_are_named(change, message):
    x, q, s, b = w8a16_case(2, 16, 64, 32, torch.float32)
    args = dict(x=x, q=q, s=s, b=b)
    args = {k: change.get(k, lambda t: t)(v) for k, v in args.items()}
    with pytest.raises((ValueError, RuntimeError), match=message):
        torch.ops.qpass.w8a16_linear(args["x"], args["q"], args["s"], args["b"], 32)


def test_w8a16_unsupported_group_is_refused_by_the_kernel():
    assert not supported_group(200, 40) and supported_group(200, 64) and supported_group(200, -1)
    x, q, s, b = w8a16_case(2, 16, 200, 40, torch.float32)
    with pytest.raises(ValueError, match="group_size=40"):
        w8a16_linear_triton(x, q, s, b, 40)
