"""The ops' per-signature plans (kernels/checks.py `planned`) and the bound launches they call (kernels/launch.py).

A plan is what an op decides once per argument signature (kernel, config, output shape, the launch with every
scalar fixed); these tests run each plan's call on fresh inputs of the same signature against the reference, and
check when a plan is (not) reused. The direct driver launch of kernels/launch.py is checked with a stand-in for a
compiled Triton kernel (no GPU here): which arguments reach the driver launcher, and when Triton's own path runs.
"""
from types import SimpleNamespace

import pytest
import torch

from qpass.kernels import checks as C
from qpass.kernels import formats as F
from qpass.kernels import ops as _registers_the_ops  # noqa: F401
from qpass.kernels import launch as L
from qpass.kernels.attention import dense
from qpass.kernels.int4 import reference as R4
from qpass.kernels.int4.gemv import w4a16_gemv4_plan
from qpass.kernels.int8 import quant_act
from qpass.kernels.int8 import reference as R8
from qpass.kernels.int8.w4a8 import _dp4a_plan
from qpass.kernels.ternary.gemv4 import ternary_gemv4_plan
from qpass.kernels.ternary.reference import ternary_linear_ref

from kernels_util import rel_err, ternary_case, w4a16_case


@pytest.mark.parametrize("lead,K,G,sym,bias", [
    ((1,), 256, 64, True, False), ((1, 1), 200, 32, False, True), ((1,), 172, -1, True, True),
    ((1, 1), 1100, 64, False, False),
])
def test_w4a16_plan_runs_every_call_of_its_signature(lead, K, G, sym, bias):
    N = 37
    x, p, s, z, b = w4a16_case(1, N, K, G, sym, torch.float16, bias)
    call = w4a16_gemv4_plan(x.reshape(*lead, K), p, s, z, b, G)
    for _ in range(2):  # fresh x each call: the plan holds no data
        x = torch.randn(*lead, K).half()
        y = call(x, p, s, z, b, G)
        assert y.shape == (*lead, N) and y.dtype == torch.float16
        assert rel_err(y, R4.w4a16_linear_ref(x, p, s, z, b, G)) < 2e-3


@pytest.mark.parametrize("K,G,bias", [(256, 64, True), (200, -1, False), (1040, 32, True)])
def test_ternary_plan_runs_every_call_of_its_signature(K, G, bias):
    x, t1, t2, a1, a2, b = ternary_case(1, 29, K, G, torch.float16, bias)
    Gn = K if G <= 0 else G
    call = ternary_gemv4_plan(x.reshape(1, 1, K), t1, t2, a1, a2, b, Gn)
    for _ in range(2):
        x = torch.randn(1, 1, K).half()
        y = call(x, t1, t2, a1, a2, b, G)
        assert y.shape == (1, 1, 29)
        assert rel_err(y, ternary_linear_ref(x, t1, t2, a1, a2, b, G)) < 2e-3


@pytest.mark.parametrize("K,G,zeros,x_scale", [(256, 64, False, True), (200, 0, True, True), (520, 32, True, False)])
def test_w4a8_decode_plan_matches_the_reference(K, G, zeros, x_scale):
    N = 33
    g = torch.Generator().manual_seed(K + G)
    groups = 1 if G <= 0 else -(-K // G)
    ws = torch.rand(N, groups, generator=g) * 0.01 + 1e-3
    q = torch.randint(0 if zeros else -8, 16 if zeros else 8, (N, K), generator=g).to(torch.int8)
    wz = torch.randint(0, 16, (N, groups), generator=g).float() if zeros else None
    if G <= 0:  # the op's per-row steps are [N]
        ws, wz = ws.reshape(-1), None if wz is None else wz.reshape(-1)
    p = torch.randn(N)
    packed = F.pack_int4(q)
    x = torch.randint(-128, 128, (1, K), generator=g).to(torch.int8)
    xs = torch.rand(1) * 0.1 + 0.01 if x_scale else None
    call = _dp4a_plan(x, packed, ws, xs, p, torch.float32, G, wz)
    for seed in range(2):
        x = torch.randint(-128, 128, (1, K), generator=torch.Generator().manual_seed(seed)).to(torch.int8)
        y = call(x, packed, ws, xs, p, torch.float32, G, None, wz, None)
        ref = R8.w4a8_linear_ref(x, packed, ws, xs, p, torch.float32, G, None, w_zero=wz)
        assert y.shape == (1, N) and rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("static,zero_gather", [(False, False), (True, False), (True, True)])
def test_quantize_plan_matches_the_reference(static, zero_gather):
    Cn, qmax = 300, 127
    g = torch.Generator().manual_seed(3)
    step = torch.rand(1, generator=g) * 0.05 + 0.01 if static else None
    zero = torch.randint(-5, 6, (310,), generator=g).float() if zero_gather else None
    gather = torch.randint(0, Cn + 4, (310,), generator=g) if zero_gather else None
    x = torch.randn(1, 1, Cn, generator=g).half()
    call = quant_act.plan(x, step, qmax, zero, gather)
    for _ in range(2):
        x = torch.randn(1, 1, Cn, generator=g).half()
        q, s = call(x, step, qmax, zero, gather, 1.0)
        qr, sr = R8.quantize_activation_int8_ref(x, step, qmax, zero, gather)
        assert q.shape == qr.shape and torch.equal(q, qr) and torch.allclose(s, sr)


def test_planned_decides_once_per_signature():
    made, checked = [], []

    def check(x, n):
        checked.append(n)
        torch._check_value(n > 0, lambda: "n must be positive")

    def make(x, n):
        made.append((x.shape, x.stride(), x.dtype))
        return len(made)

    x = torch.randn(4, 6)
    assert C.planned(check, make, x, 1) == C.planned(check, make, torch.randn(4, 6), 1) == 1
    assert C.planned(check, make, x.t().contiguous().t(), 1) == 2  # other strides: another plan
    assert C.planned(check, make, x.half(), 1) == 3  # another dtype
    assert C.planned(check, make, x, 2) == 4  # another plain argument
    with pytest.raises(ValueError, match="n must be positive"):
        C.planned(check, make, x, -1)
    assert len(made) == 4 and checked == [1, 1, 1, 2, -1]


class _Compiled:
    """Stands in for Triton's CompiledKernel: records the driver launches."""
    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.runs = []

    def run(self, *args):
        self.runs.append(args)

    def launch_metadata(self, grid, stream, *args):
        return ("launch metadata", grid)


class _Kernel:
    """Stands in for a @triton.jit function: `kernel[grid](*args, **meta)` is Triton's own path."""
    arg_names = ["x_ptr", "y_ptr", "n", "BLOCK", "FLAG"]

    def __init__(self):
        self.compiles, self.compiled = [], _Compiled()

    def __getitem__(self, grid):
        def run(*args, **meta):
            self.compiles.append((grid, args, meta))
            return self.compiled
        return run


@pytest.fixture
def fake_driver(monkeypatch):
    """Device 0, stream 1234, an empty cache, no launch hooks (a profiler would install them)."""
    monkeypatch.setattr(L, "_DEVICE_STREAM", (lambda: 0, lambda device: 1234))
    monkeypatch.setattr(L, "_COMPILED", {})
    monkeypatch.setattr(L, "_BINDINGS", {})
    monkeypatch.setattr(L, "knobs", SimpleNamespace(runtime=SimpleNamespace(launch_enter_hook=None,
                                                                            launch_exit_hook=None)))


def test_launch_takes_the_driver_path_from_the_second_call(fake_driver):
    k = _Kernel()
    x, y = torch.zeros(8), torch.zeros(8)
    L.launch(k, (2,), x, y, 8, BLOCK=4, FLAG=True, num_warps=1)
    L.launch(k, (2,), x, y, 8, BLOCK=4, FLAG=True, num_warps=1)
    assert len(k.compiles) == 1 and len(k.compiled.runs) == 1
    grid0, grid1, grid2, stream, fn, packed, metadata, enter, exit_, *values = k.compiled.runs[0]
    assert (grid0, grid1, grid2, stream, fn, packed, metadata) == (2, 1, 1, 1234, "fn", "meta", None)
    assert values == [x.data_ptr(), y.data_ptr(), 8, 4, True]  # declaration order, no launch options
    L.launch(k, (2,), x, y, 9, BLOCK=4, FLAG=True, num_warps=1)  # another int: Triton specializes, so its path
    L.launch(k, (2,), x[1:], y, 8, BLOCK=4, FLAG=True, num_warps=1)  # 4-byte offset: another alignment
    L.launch(k, (2,), x.double(), y, 8, BLOCK=4, FLAG=True, num_warps=1)  # another dtype
    assert len(k.compiles) == 4 and len(k.compiled.runs) == 1


def test_bound_launch_fills_its_tensor_slots_and_shares_entries(fake_driver, monkeypatch):
    k = _Kernel()
    x, y = torch.zeros(8), torch.zeros(8)
    bound = L.bind(k, (3, 2), [L.TENSOR, L.TENSOR, 8], dict(BLOCK=4, FLAG=False, num_warps=2))
    bound(x, y)
    assert k.compiles == [((3, 2), (x, y, 8), dict(BLOCK=4, FLAG=False, num_warps=2))]
    x2, y2 = torch.ones(8), torch.ones(8)
    L.bind(k, (3, 2), [L.TENSOR, L.TENSOR, 8], dict(BLOCK=4, FLAG=False, num_warps=2))(x2, y2)  # equal binding
    assert len(k.compiles) == 1
    *head, v0, v1, n, block, flag = k.compiled.runs[0]
    assert head[:4] == [3, 2, 1, 1234] and (n, block, flag) == (8, 4, False)
    assert (v0, v1) == (x2.data_ptr(), y2.data_ptr())  # device addresses as ints: the driver takes them as they are
    bound(x, y)
    assert list(bound.aligned) == [0]  # all 16-byte aligned: found per device from now on, without a key
    bound(x[1:], y)  # misaligned: Triton's path again
    assert len(k.compiles) == 2
    bound(x[1:], y)  # ... once: then its compiled entry, under the alignments' key
    assert len(k.compiles) == 2 and k.compiled.runs[-1][9] == x[1:].data_ptr()
    with pytest.raises(TypeError, match="bound for tensors of"):  # where a call is keyed, its dtypes are checked
        bound(x.double()[1:], y)  # (a binding's dtypes are its plan's: another dtype is another plan)
    hook = []
    L.knobs.runtime.launch_enter_hook = lambda *a: hook.append(a)
    bound(x, y)  # a profiler's hook gets Triton's launch metadata, and the tensors as Triton passes them
    assert k.compiled.runs[-1][6] == ("launch metadata", (3, 2, 1)) and k.compiled.runs[-1][7] is not None
    assert k.compiled.runs[-1][9] is x
    L.knobs.runtime.launch_enter_hook = SimpleNamespace(calls=[])  # Triton >= 3.5's hook chain, empty: no hook
    bound(x, y)
    assert k.compiled.runs[-1][6] is None and k.compiled.runs[-1][9] == x.data_ptr()


def test_the_ops_cuda_plans_run_in_the_interpreter(monkeypatch):
    """Each hot op through its CUDA plan (the op picks kernel and plan, the bound launch runs the kernel in the
    interpreter), two calls of one signature, against the references. CPU tensors answer is_cuda = True here; the
    plans they make are dropped afterwards (the remembered signatures are this test's own). None is a reference."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(C, "_PASSED", {})
    ops, N, K, h = torch.ops.qpass, 40, 320, torch.float16
    q, s, _ = F.quantize_int4(torch.randn(N, K), 64, True)
    p, s = F.pack_int4(q), s.half()
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K), 64)
    t1, t2, a1, a2 = F.pack_trits(t1), F.pack_trits(t2), a1.half(), a2.half()
    q8 = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    ws, ws_g = torch.rand(N) * 1e-2, torch.rand(N, K // 64) * 1e-2
    monkeypatch.setattr(dense, "_capturing", lambda q: False)  # no CUDA graph is being captured
    kv_len, mask = 300, torch.rand(1, 1, 1, 300) > 0.2
    for _ in range(2):
        q_, k_, v_ = torch.randn(1, 6, 1, 64).half(), *(torch.randn(1, 2, kv_len, 64).half() for _ in range(2))
        for m in (mask, None):  # the decode kernel with a mask; SDPA without one outside capture
            out = ops.attention(q_, k_, v_, m, False, None, True)
            ref = torch.nn.functional.scaled_dot_product_attention(*(t.float() for t in (q_, k_, v_)), m,
                                                                   enable_gqa=True)
            assert rel_err(out, ref) < 2e-3
        x, x8 = torch.randn(1, 1, K).half(), torch.randint(-127, 128, (1, K), dtype=torch.int8)
        x8_rows, xs, xs_rows = torch.randint(-127, 128, (5, K), dtype=torch.int8), torch.rand(1), torch.rand(5)
        assert rel_err(ops.w4a16_linear(x, p, s, None, None, 64), R4.w4a16_linear_ref(x, p, s, None, None, 64)) < 2e-3
        assert rel_err(ops.ternary_linear(x, t1, t2, a1, a2, None, 64),
                       ternary_linear_ref(x, t1, t2, a1, a2, None, 64)) < 2e-3
        for xi, xsi in ((x8, xs), (x8_rows, xs_rows)):  # the dp4a GEMV; the in-register-unpack GEMM
            assert rel_err(ops.w4a8_linear(xi, p, ws_g, xsi, None, h, 64),
                           R8.w4a8_linear_ref(xi, p, ws_g, xsi, None, h, 64)) < 2e-3
        assert rel_err(ops.int8_linear(x8, q8, ws, xs, None, h), R8.int8_linear_ref(x8, q8, ws, xs, None, h)) < 2e-3
        for step in (None, torch.rand(1) * 0.05 + 0.01):
            codes, steps = ops.quantize_activation_int8(x, step, 127)
            ref_codes, ref_steps = R8.quantize_activation_int8_ref(x, step, 127)
            assert torch.equal(codes, ref_codes) and torch.allclose(steps, ref_steps)
    assert len(C._PASSED) == 9  # one plan per op signature, made by the first of the two calls
    assert not [plan for plan in C._PASSED.values() if plan.__name__.endswith("_ref") or plan is dense.dense]


def test_the_ops_prompt_plans_run_in_the_interpreter(monkeypatch):
    """The multi-row plans (W4A16's tensor-core tile and dequantize pass, the ternary tile, W4A8's tile on the codes
    and its unpack + int8 GEMM with integer group steps) on CUDA-looking CPU tensors, two calls of one signature each, against the
    references; x handed over as it is (a row-strided view) and copied (a transposed one)."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(C, "_PASSED", {})
    ops, N, K, h = torch.ops.qpass, 40, 256, torch.float16
    q, s, z = F.quantize_int4(torch.randn(N, K), 64, False)
    p, s, z, b = F.pack_int4(q), s.half(), z.half(), torch.randn(N).half()
    for M in (5, 130):  # "tc", "dequant"
        for make in (lambda: torch.randn(1, M, K).half(), lambda: torch.randn(M, 2 * K).half()[:, :K],
                     lambda: torch.randn(K, M).half().t()):
            for _ in range(2):
                x = make()
                assert rel_err(ops.w4a16_linear(x, p, s, z, b, 64), R4.w4a16_linear_ref(x, p, s, z, b, 64)) < 2e-3
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K), 64)
    t1, t2, a1, a2 = F.pack_trits(t1), F.pack_trits(t2), a1.half(), a2.half()
    for make in (lambda: torch.randn(1, 6, K).half(), lambda: torch.randn(K, 6).half().t()):  # the ternary tile
        for _ in range(2):
            x = make()
            assert rel_err(ops.ternary_linear(x, t1, t2, a1, a2, b, 64),
                           ternary_linear_ref(x, t1, t2, a1, a2, b, 64)) < 2e-3
    r = torch.rand(N) * 1e-2 + 1e-3
    u = torch.randint(1, 4, (N, K // 64)).float()
    ws, wz = u * r[:, None], torch.randint(0, 16, (N, K // 64)).float()
    p8 = F.pack_int4(torch.randint(0, 16, (N, K), dtype=torch.int8))  # plain nibbles (zero points given)
    for M in (20, 70):  # "tc" (grouped, 17-32 rows), "unpack" with integer group steps
        for xs_of in (lambda: torch.rand(M), lambda: torch.rand(M, 2)[:, :1]):  # as it is / converted per call
            for _ in range(2):
                x8, xs = torch.randint(-127, 128, (1, M, K), dtype=torch.int8), xs_of() * 1e-2
                ref = R8.w4a8_linear_ref(x8, p8, ws, xs, b, h, 64, None, wz)
                assert rel_err(ops.w4a8_linear(x8, p8, ws, xs, b, h, 64, None, wz, r), ref) < 2e-3
    assert len(C._PASSED) == 12 and not [plan for plan in C._PASSED.values()  # every one bound, none per call
                                         if plan.__name__.endswith("_ref") or plan.__name__ in ("run", "_run_op_args")]
