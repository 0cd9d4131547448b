"""Property tests: the qpass:: kernel custom ops on CPU (the pure-torch reference path), against an independent
dequantize-then-matmul computed here from the unpacked codes; and their input validation: a packed weight,
scales, zero points, steps or bias whose shape does not match the activation must raise the error
`torch._check` raises (RuntimeError / ValueError) — never compute a silently wrong result, never another
exception type (IndexError, AssertionError ...)."""
from __future__ import annotations


import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import qpass  # noqa: F401
import qpass.kernels.ops  # noqa: F401  (registers torch.ops.qpass.*)
from qpass.kernels import formats

OPS = torch.ops.qpass
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}
ALLOWED = (RuntimeError, ValueError)  # torch._check -> RuntimeError, torch._check_value -> ValueError


from prop_util import n  # noqa: E402


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(out: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.shape == want.shape, (out.shape, want.shape)
    assert out.dtype == dtype, (out.dtype, dtype)
    o, w = out.float(), want.float()
    assert torch.isfinite(o).all()
    tol = TOL[dtype]
    scale = w.abs().max().item() + 1e-6
    err = (o - w).abs().max().item()
    assert err <= tol * scale + tol, f"max abs err {err} vs scale {scale} ({dtype})"


def _expand_groups(a: torch.Tensor, K: int, group_size: int) -> torch.Tensor:
    """[N, groups] -> [N, K]: column k takes group k // G (G = K when per-channel), written out independently."""
    G = K if group_size <= 0 or group_size >= K else group_size
    cols = [a[:, k // G] for k in range(K)]
    return torch.stack(cols, dim=1).float()


def _expected(x, w_float, bias, out_dtype):
    lead = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]).double() @ w_float.double().t()
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*lead, w_float.shape[0]).to(out_dtype)


shapes = st.tuples(
    st.sampled_from([(1,), (2,), (3,), (7,), (1, 1), (2, 3), (1, 5)]),  # leading dims (M incl. 1)
    st.one_of(st.integers(1, 20), st.sampled_from([7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129])),  # K
    st.integers(1, 24),  # N
)
group_sizes = st.one_of(st.sampled_from([-1, 0, 8, 16, 32, 64, 128]), st.integers(1, 70))


# --------------------------------------------------------------------------------------------- W4A16
@settings(max_examples=n(200))
@given(shapes, group_sizes, st.sampled_from(DTYPES), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_w4a16_matches_dequant_matmul(shape, group_size, dtype, symmetric, with_bias, seed):
    lead, K, N = shape
    g = _gen(seed)
    w = torch.randn(N, K, generator=g)
    q, s, z = formats.quantize_int4(w, group_size, symmetric=symmetric)
    packed = formats.pack_int4(q)
    assert packed.shape == (N, (K + 7) // 8 * 4) and packed.dtype == torch.uint8
    x = torch.randn(*lead, K, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype) if with_bias else None
    out = OPS.w4a16_linear(x, packed, s, z, bias, group_size)
    wf = (q.float() - (0 if z is None else _expand_groups(z, K, group_size))) * _expand_groups(s, K, group_size)
    _close(out, _expected(x.float(), wf, None if bias is None else bias.float(), dtype), dtype)


def _scaled_integer_product(x, w, ws, xs, bias):
    """The int8 / W4A8 ops' definition in float64: (x @ w^T) * ws[n] (* xs[row]) (+ bias)."""
    acc = x.reshape(-1, x.shape[-1]).double() @ w.double().t() * ws.double()[None, :]
    if xs is not None:
        acc = acc * xs.double()[:, None]
    if bias is not None:
        acc = acc + bias.double()
    return acc.reshape(*x.shape[:-1], w.shape[0])


# ---------------------------------------------------------------------------------------------- int8
@settings(max_examples=n(150))
@given(shapes, st.sampled_from(DTYPES), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_int8_linear_matches_integer_product(shape, out_dtype, with_xs, with_bias, seed):
    lead, K, N = shape
    g = _gen(seed)
    x = torch.randint(-128, 128, (*lead, K), generator=g, dtype=torch.int8)
    w = torch.randint(-128, 128, (N, K), generator=g, dtype=torch.int8)
    rows = x.numel() // K
    ws = torch.rand(N, generator=g) * 0.01 + 1e-4
    xs = torch.rand(rows, generator=g) * 0.01 + 1e-4 if with_xs else None
    bias = torch.randn(N, generator=g).to(out_dtype) if with_bias else None
    out = OPS.int8_linear(x, w, ws, xs, bias, out_dtype)
    _close(out, _scaled_integer_product(x, w, ws, xs, bias).to(out_dtype), out_dtype)


# ---------------------------------------------------------------------------------------------- W4A8
@settings(max_examples=n(150))
@given(shapes, st.sampled_from(DTYPES), st.sampled_from([127, 7]), st.booleans(), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_w4a8_linear_matches_integer_product(shape, out_dtype, qmax, with_xs, with_bias, seed):
    lead, K, N = shape
    g = _gen(seed)
    x = torch.randint(-qmax - 1, qmax + 1, (*lead, K), generator=g, dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
    packed = formats.pack_int4(q)
    rows = x.numel() // K
    ws = torch.rand(N, generator=g) * 0.01 + 1e-4
    xs = torch.rand(rows, generator=g) * 0.01 + 1e-4 if with_xs else None
    bias = torch.randn(N, generator=g).to(out_dtype) if with_bias else None
    out = OPS.w4a8_linear(x, packed, ws, xs, bias, out_dtype)
    _close(out, _scaled_integer_product(x, q, ws, xs, bias).to(out_dtype), out_dtype)


# ---------------------------------------------------------------------------------- activation quantizer
@settings(max_examples=n(150))
@given(shapes, st.sampled_from(DTYPES), st.sampled_from([127, 7]), st.sampled_from(["dynamic", "scalar", "per_row"]),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_quantize_activation_int8(shape, dtype, qmax, mode, zero_row, seed):
    lead, K, _ = shape
    g = _gen(seed)
    x = (torch.randn(*lead, K, generator=g) * 3).to(dtype)
    if zero_row:
        x.reshape(-1, K)[0] = 0
    rows = x.numel() // K
    xf = x.reshape(rows, K).float()
    if mode == "dynamic":
        scale = None
        s_want = xf.abs().amax(-1) / qmax
        s_want = torch.where(s_want > 0, s_want, torch.ones_like(s_want))
    else:
        scale = torch.rand(1 if mode == "scalar" else rows, generator=g) * 0.2 + 0.01
        s_want = scale.float().reshape(-1).expand(rows)
    q, s = OPS.quantize_activation_int8(x, scale, qmax)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert s.dtype == torch.float32 and s.shape == (rows,)
    torch.testing.assert_close(s, s_want, rtol=1e-6, atol=0)
    qf = q.reshape(rows, K).float()
    assert int(qf.min()) >= -qmax - 1 and int(qf.max()) <= qmax
    ideal = xf / s_want[:, None]
    inside = ideal.abs() <= qmax
    # round to nearest: within half a step (plus fp32 slack) wherever the value is in range
    assert ((qf - ideal).abs()[inside] <= 0.5 + 1e-4).all()
    assert (qf[ideal > qmax] == qmax).all() and (qf[ideal < -qmax - 1] == -qmax - 1).all()
    if scale is not None:
        assert s.data_ptr() != scale.data_ptr()  # never aliases the op's input


# ------------------------------------------------------------------------------------------- ternary
@settings(max_examples=n(150))
@given(shapes, group_sizes, st.sampled_from(DTYPES), st.booleans(), st.integers(0, 2**31 - 1))
def test_ternary_matches_dequant_matmul(shape, group_size, dtype, with_bias, seed):
    lead, K, N = shape
    g = _gen(seed)
    t1 = torch.randint(-1, 2, (N, K), generator=g, dtype=torch.int8)
    t2 = torch.randint(-1, 2, (N, K), generator=g, dtype=torch.int8)
    ng = formats.num_groups(K, group_size)
    a1, a2 = torch.rand(N, ng, generator=g), torch.rand(N, ng, generator=g) * 0.3
    p1, p2 = formats.pack_trits(t1), formats.pack_trits(t2)
    assert p1.shape == (N, (K + 15) // 16 * 4)
    x = torch.randn(*lead, K, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype) if with_bias else None
    out = OPS.ternary_linear(x, p1, p2, a1, a2, bias, group_size)
    wf = t1.float() * _expand_groups(a1, K, group_size) + t2.float() * _expand_groups(a2, K, group_size)
    _close(out, _expected(x.float(), wf, None if bias is None else bias.float(), dtype), dtype)


# ------------------------------------------------------------------------------------ input validation
def _other(v: int, lo: int, delta: int) -> int:
    """v + delta, kept >= lo and different from v."""
    w = v + delta
    if w < lo:
        w = v + abs(delta) + 1
    return w


@st.composite
def w4a16_mismatch(draw):
    lead, K, N = draw(shapes)
    group_size = draw(group_sizes)
    symmetric = draw(st.booleans())
    what = draw(st.sampled_from(["x_K", "packed_cols", "packed_rows", "scales_groups", "scales_rows", "zeros",
                                 "bias"]))
    delta = draw(st.integers(-9, 9).filter(bool))
    return lead, K, N, group_size, symmetric, what, delta, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=n(150))
@given(w4a16_mismatch())
def test_w4a16_refuses_mismatched_shapes(case):
    lead, K, N, group_size, symmetric, what, delta, seed = case
    g = _gen(seed)
    q, s, z = formats.quantize_int4(torch.randn(N, K, generator=g), group_size, symmetric=symmetric)
    packed = formats.pack_int4(q)
    x = torch.randn(*lead, K, generator=g)
    bias = None
    if what == "x_K":
        Kx = _other(K, 1, delta)
        # inside the last packed word a shorter K is indistinguishable (zero padding): only other widths/groups
        assume((Kx + 7) // 8 * 4 != packed.shape[1] or formats.num_groups(Kx, group_size) != s.shape[1])
        x = torch.randn(*lead, Kx, generator=g)
    elif what == "packed_cols":
        cols = _other(packed.shape[1], 0, 4 * delta)
        packed = torch.zeros(N, cols, dtype=torch.uint8)
    elif what == "packed_rows":
        packed = torch.zeros(_other(N, 0, delta), packed.shape[1], dtype=torch.uint8)
    elif what == "scales_groups":
        s = torch.rand(N, _other(s.shape[1], 0, delta))
        z = None if z is None else torch.zeros_like(s)
    elif what == "scales_rows":
        s = torch.rand(_other(N, 0, delta), s.shape[1])
        z = None if z is None else torch.zeros_like(s)
    elif what == "zeros":
        z = torch.zeros(N, _other(s.shape[1], 0, delta))
    elif what == "bias":
        bias = torch.randn(_other(N, 0, delta))
    with pytest.raises(ALLOWED):
        OPS.w4a16_linear(x, packed, s, z, bias, group_size)


@st.composite
def int_mismatch(draw):
    lead, K, N = draw(shapes)
    what = draw(st.sampled_from(["x_K", "w_cols", "w_scale", "x_scale", "bias"]))
    delta = draw(st.integers(-9, 9).filter(bool))
    return lead, K, N, what, delta, draw(st.sampled_from(["int8_linear", "w4a8_linear"])), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=n(150))
@given(int_mismatch())
def test_int_gemms_refuse_mismatched_shapes(case):
    lead, K, N, what, delta, op, seed = case
    g = _gen(seed)
    x = torch.randint(-8, 8, (*lead, K), generator=g, dtype=torch.int8)
    rows = x.numel() // K
    Kw = _other(K, 1, delta) if what == "w_cols" else K
    q = torch.randint(-8, 8, (N, Kw), generator=g, dtype=torch.int8)
    w = q if op == "int8_linear" else formats.pack_int4(q)
    if op == "w4a8_linear" and what == "w_cols":
        assume(w.shape[1] != (K + 7) // 8 * 4)  # the same packed width is a valid weight of width K
    ws = torch.rand(_other(N, 0, delta) if what == "w_scale" else N, generator=g)
    xs = torch.rand(_other(rows, 0, delta) if what == "x_scale" else rows, generator=g)
    bias = torch.randn(_other(N, 0, delta), generator=g) if what == "bias" else None
    if what == "x_K":
        x = torch.randint(-8, 8, (*lead, _other(K, 1, delta)), generator=g, dtype=torch.int8)
        if op == "w4a8_linear":
            assume((x.shape[-1] + 7) // 8 * 4 != w.shape[1])
    with pytest.raises(ALLOWED):
        getattr(OPS, op)(x, w, ws, xs, bias, torch.float32)


@st.composite
def ternary_mismatch(draw):
    lead, K, N = draw(shapes)
    group_size = draw(group_sizes)
    what = draw(st.sampled_from(["x_K", "t1_cols", "t2_cols", "t2_rows", "alpha1", "alpha2", "bias"]))
    delta = draw(st.integers(-9, 9).filter(bool))
    return lead, K, N, group_size, what, delta, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=n(120))
@given(ternary_mismatch())
def test_ternary_refuses_mismatched_shapes(case):
    lead, K, N, group_size, what, delta, seed = case
    g = _gen(seed)
    t = torch.randint(-1, 2, (N, K), generator=g, dtype=torch.int8)
    p1 = p2 = formats.pack_trits(t)
    ng = formats.num_groups(K, group_size)
    a1 = a2 = torch.rand(N, ng, generator=g)
    x = torch.randn(*lead, K, generator=g)
    bias = None
    if what == "x_K":
        Kx = _other(K, 1, 16 * delta)  # another packed width, not just a shorter tail
        x = torch.randn(*lead, Kx, generator=g)
    elif what == "t1_cols":
        p1 = torch.zeros(N, _other(p1.shape[1], 0, 4 * delta), dtype=torch.uint8)
    elif what == "t2_cols":
        p2 = torch.zeros(N, _other(p2.shape[1], 0, 4 * delta), dtype=torch.uint8)
    elif what == "t2_rows":
        p2 = torch.zeros(_other(N, 0, delta), p2.shape[1], dtype=torch.uint8)
    elif what == "alpha1":
        a1 = torch.rand(N, _other(ng, 0, delta))
    elif what == "alpha2":
        a2 = torch.rand(_other(N, 0, delta), ng)
    elif what == "bias":
        bias = torch.randn(_other(N, 0, delta))
    with pytest.raises(ALLOWED):
        OPS.ternary_linear(x, p1, p2, a1, a2, bias, group_size)


@settings(max_examples=n(60))
@given(shapes, st.sampled_from([127, 7]), st.integers(-5, 5).filter(bool), st.integers(0, 2**31 - 1))
def test_quantize_activation_refuses_wrong_step_count(shape, qmax, delta, seed):
    """A static step is a scalar (one element) or one per row; any other count must raise."""
    lead, K, _ = shape
    g = _gen(seed)
    x = torch.randn(*lead, K, generator=g)
    rows = x.numel() // K
    count = _other(rows, 0, delta)
    assume(count != 1)
    with pytest.raises(ALLOWED):
        OPS.quantize_activation_int8(x, torch.rand(count, generator=g) + 0.1, qmax)


@settings(max_examples=n(60))
@given(shapes, st.sampled_from(["int8_linear", "w4a8_linear"]), st.sampled_from([torch.float32, torch.int32, torch.uint8, torch.float16]),
       st.integers(0, 2**31 - 1))
def test_int_gemms_refuse_non_int8_activations(shape, op, dtype, seed):
    """x_int8 must be int8: a float (un-quantized) activation passed by mistake must raise, not be multiplied."""
    lead, K, N = shape
    g = _gen(seed)
    x = torch.randint(-8, 8, (*lead, K), generator=g).to(dtype)
    q = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8)
    w = q if op == "int8_linear" else formats.pack_int4(q)
    with pytest.raises(ALLOWED):
        getattr(OPS, op)(x, w, torch.rand(N, generator=g), None, None, torch.float32)
