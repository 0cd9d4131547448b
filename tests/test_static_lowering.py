"""Static low-bit activations on the integer kernels (issue: QSM runs on real kernels): every QSM / SmoothQuant
preset lowers all the sites it quantizes, and the lowered graph matches the fake-quant graph; the guarded
sites' full-precision rows; sites no kernel takes keep their fake-quant path with the reason."""
import functools

import pytest
import torch

import qpass
from qpass import ActivationSpec, Recipe, WeightSpec
from qpass.lowering.guarded_rows import restore_guarded_rows
from qpass.lowering.qdq_ops import fake_quant_per_channel_guarded
from qpass import numerics
from qpass.kernels.formats import pack_int4
from qpass.recipe import recipes

from test_lowering import _assert_lowered_matches, _ids, _lowered_twin
from tiny_models import tiny_model

STATIC_PRESETS = sorted(n for n, r in recipes().items() if any(p.name in ("qsm", "smoothquant") for p in r.passes))
# "w8a8": w8a8-smooth's dynamic_fallback keeps tensors whose static steps measure worse dynamic per-token;
# "w4a8": w4a4-rot-qsm's qsm keeps the inputs of online Hadamards dynamic per-token
INT_RULES = {"w8a8-static", "w8a8-static-guarded", "w4a8-static", "w4a8-static-guarded", "w8a8", "w4a8"}


def _calib():
    return [torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]


def test_the_static_presets_are_the_ones_the_issue_names():
    assert {"w4a4-qsm", "w4a8-qsm", "w8a8-smooth", "w8a8-smooth-g64"} <= set(STATIC_PRESETS)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("preset", STATIC_PRESETS)
def test_static_preset_lowers_every_site_and_matches_fake_quant(arch, preset):
    q = qpass.compile(tiny_model(arch), preset, _calib(), progress=False, lower=False)
    lowered, outcomes, graphs = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)  # runs the lowered graph: `outcomes` is filled
    plan = q.qpass_state.plan
    assert plan and {outcomes[s] for s in plan} <= INT_RULES, {outcomes[s] for s in plan}
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    # no fake-quant op is left, and the QSM gather runs inside the quantizer (no index_select of its own)
    assert not {t for t in targets if "fake_quant" in t or "dequantize" in t}
    assert "<built-in method index_select of type object>" not in targets and "torch.index_select" not in str(targets)


@pytest.mark.parametrize("keep_first, outlier", [(1, 0.0), (3, 0.0), (0, 0.5), (1, 0.5)])
@pytest.mark.parametrize("w4", [True, False])
@pytest.mark.parametrize("asym", [False, True])
def test_restore_guarded_rows_recomputes_the_kept_tokens_like_the_fake_quant_op(keep_first, outlier, w4, asym):
    """int GEMM rows + the guarded tokens' float rows == linear(fake_quant_guarded(x)[gather], W_deq); asym: weight
    zero points in the int GEMM's code form (int4 plain nibbles and zeros in [0, 15]; int8 both in [-128, 127])."""
    g = torch.Generator().manual_seed(0)
    B, S, C, N, G = 2, 7, 40, 24, 32
    gather = torch.cat([torch.randperm(C, generator=g), torch.tensor([3, C, C])])  # sort, a split copy, padding
    K = gather.numel()
    x = torch.randn(B, S, C, generator=g) * 3
    x[0, 4] *= 40  # an outlier token
    scale, zero, bits = torch.ones(C), torch.randint(0, 16, (C,), generator=g).float(), 4
    lo, hi = (0, 16) if w4 and asym else (-8, 8) if w4 else (-128, 128)
    codes = torch.randint(lo, hi, (N, K), generator=g, dtype=torch.int8)
    steps = torch.rand(N, (K + G - 1) // G, generator=g) * 0.1 + 0.01
    w_zero = torch.randint(lo, hi, steps.shape, generator=g).float() if asym else None
    bias = torch.randn(N, generator=g)
    w_deq = numerics.dequantize(codes, steps, w_zero, G, torch.float32)
    xq = fake_quant_per_channel_guarded(x, scale, zero, bits, keep_first, outlier)
    xg = torch.nn.functional.pad(xq, (0, 1)).index_select(-1, gather)
    want = torch.nn.functional.linear(xg, w_deq, bias)
    keep = numerics.guarded_tokens(x, scale, zero, bits, keep_first, outlier)
    assert keep.any() and not keep.all()
    quantized_rows = torch.nn.functional.linear(
        torch.nn.functional.pad(numerics.fake_quant_per_channel(x, scale, zero, bits), (0, 1)).index_select(-1, gather),
        w_deq, bias)
    qweight = pack_int4(codes) if w4 else codes
    out = restore_guarded_rows(quantized_rows, x, scale, zero, bits, keep_first, outlier, gather.to(torch.int32),
                               qweight, steps, G, bias, w_zero)
    assert torch.allclose(out, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(quantized_rows, want, atol=1e-2)  # the restore changed something
    assert torch.equal(out[~keep], quantized_rows[~keep])  # and only the kept rows


def test_static_steps_that_differ_by_channel_stay_unlowered_with_the_reason():
    """w8a8-static (no migration: one calibrated step per channel) — no integer kernel takes per-channel steps."""
    q = qpass.compile(tiny_model("llama"), "w8a8-static", _calib(), progress=False)
    rep = qpass.report(q)
    assert rep.quantized and all("static per-channel activation steps differ by channel" in r.lowering
                                 for r in rep.quantized)


def test_bits_no_integer_kernel_takes_are_refused_with_the_reason():
    r = Recipe("w4a3", weights=WeightSpec(bits=4, group_size=64), activations=ActivationSpec(bits=3, granularity="per_token"))
    rep = qpass.report(qpass.compile(tiny_model("llama"), r, progress=False))
    assert rep.quantized and all(r.lowering.startswith("unmatched") and "w4 a3" in r.lowering for r in rep.quantized)


def test_decode_graphs_of_a_prefix_guarded_site_run_no_restore():
    """A decode step's graph (length 1, static) has no token in the kept prefix: its guarded sites emit the int GEMM
    alone, while the prefill graph recomputes the prefix rows; the decoded logits still match fake quant."""
    q = qpass.compile(tiny_model("llama"), "w4a8-qsm", _calib(), progress=False, lower=False)
    migrated = [sp.migrated for sp in q.qpass_state.plan.values()]
    assert migrated and all(mi.keep_first > 0 and mi.outlier_guard == 0 for mi in migrated)
    lowered, _, graphs = _lowered_twin(q)
    ids = _ids()[:1, :12]
    with torch.no_grad():
        out = lowered(input_ids=ids, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        step = lowered(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True).logits
        ref_out = q(input_ids=ids, use_cache=True)
        ref = q(input_ids=nxt, past_key_values=ref_out.past_key_values, use_cache=True).logits
    assert torch.allclose(step, ref, atol=1e-4, rtol=1e-4)
    restores = [sum(n.target is torch.ops.qpass.restore_guarded_rows.default for n in g.graph.nodes) for g in graphs]
    assert len(graphs) == 2 and restores[0] > 0 and restores[1] == 0, restores


def test_an_inner_compiler_runs_the_same_lowered_graphs():
    """compiler="aot_eager" (as "inductor" on a GPU) compiles the rewritten graphs: same logits; bad names refused."""
    model = tiny_model("llama")
    ids = _ids()
    plain = qpass.compile(model, "w4a8-qsm", _calib(), progress=False, copy=True)
    inner = qpass.compile(model, "w4a8-qsm", _calib(), progress=False, copy=True, compiler="aot_eager")
    with torch.no_grad():
        assert torch.allclose(inner(ids).logits, plain(ids).logits, atol=1e-5)
    assert qpass.report(inner).summary()["lowered"] == qpass.report(plain).summary()["lowered"] > 0
    with pytest.raises(ValueError, match="compiler must be None or a Dynamo backend name"):
        qpass.compile(model, "w4a16", progress=False, copy=True, compiler="no-such-backend")


def _asymmetric(preset: str) -> Recipe:
    import dataclasses

    r = recipes()[preset]
    return dataclasses.replace(r, name=f"{preset}-asym", weights=dataclasses.replace(r.weights, symmetric=False))


@pytest.mark.parametrize("preset", ["w4a8-qsm", "w4a4-qsm"])
def test_asymmetric_weights_lower_to_the_int_gemm_and_match_fake_quant(preset):
    """Weights with per-(row, group) zero points (weights.symmetric: false) on the static int kernels: every site
    lowered to qpass::w4a8_linear with its zeros as a graph constant, the lowered logits as close to the
    fake-quant graph's as the symmetric case's (before the zero points in the kernels no site was lowered)."""
    q = qpass.compile(tiny_model("llama"), _asymmetric(preset), _calib(), progress=False, lower=False)
    plan = q.qpass_state.plan
    assert plan and all(sp.weight.zero is not None for sp in plan.values())
    lowered, outcomes, graphs = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)
    assert {outcomes[s] for s in plan} <= {"w4a8-static", "w4a8-static-guarded"}, {outcomes[s] for s in plan}
    calls = [n for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    gemms = [n for n in calls if n.target is torch.ops.qpass.w4a8_linear.default]
    assert gemms and all(len(n.args) >= 9 and n.args[8].op == "get_attr" for n in gemms)  # w_zero: a constant
    assert len(gemms) < len(plan)  # q/k/v and gate/up fused (lowering/fuse.py): their zeros stacked with the steps
    assert not {str(n.target) for n in calls if "fake_quant" in str(n.target) or "dequantize" in str(n.target)}


@pytest.mark.parametrize("preset, symmetric", [("w4a8-qsm", False), ("w4a4-qsm", True)])
def test_integer_group_steps_lower_with_one_step_per_row_and_match_fake_quant(preset, symmetric):
    """weights.integer_group_steps: each group's step an integer multiple of its row's, so the prefill GEMM runs in
    int8 over all of K; the lowering finds the row steps (a `w_step` constant on every W4A8 call) and the lowered
    logits match the fake-quant graph's."""
    import dataclasses

    r = recipes()[preset]
    recipe = dataclasses.replace(r, name=f"{preset}-int-steps", weights=dataclasses.replace(
        r.weights, symmetric=symmetric, integer_group_steps=True))
    q = qpass.compile(tiny_model("llama"), recipe, _calib(), progress=False, lower=False)
    plan = q.qpass_state.plan
    limit = numerics.integer_step_limit(4, symmetric)
    for sp in plan.values():  # the planned grids are integer multiples of the row step, within the int8 range
        s = sp.weight.scale.double()
        u = s / (s.amax(-1, keepdim=True) / limit)
        assert torch.allclose(u, u.round(), atol=1e-4) and u.min() >= 1 - 1e-4 and u.max() <= limit + 1e-4
    lowered, outcomes, graphs = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)
    calls = [n for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    gemms = [n for n in calls if n.target is torch.ops.qpass.w4a8_linear.default]
    grouped = [n for n in gemms if n.args[6] > 0]  # tiny widths: most rows are one group (the per-row kernel)
    assert grouped and all(len(n.args) == 10 and n.args[9].op == "get_attr" for n in grouped)  # w_step: a constant
    assert all(n.args[7] is None for n in gemms)  # the activation zeros' share is in the bias, not the GEMM


def test_activation_zero_points_enter_the_bias_not_the_gemm():
    """Static asymmetric activations: the zeros' share z·Wᵀ is a constant of the graph (a bias), so no GEMM takes
    x_zero, and the lowered graph still matches the fake-quant one (test above for every preset)."""
    q = qpass.compile(tiny_model("llama"), "w4a8-qsm", _calib(), progress=False, lower=False)
    assert any(sp.activation.zero is not None for sp in q.qpass_state.plan.values())
    lowered, _, graphs = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)
    gemms = [n for g in graphs for n in g.graph.nodes if n.target is torch.ops.qpass.w4a8_linear.default]
    assert gemms and all(n.args[7] is None and n.args[4] is not None for n in gemms)


@functools.cache
def _inductor_inputs():
    """(Registered once) a Dynamo backend that hands back the graphs inductor would compile (AOT-traced with inductor's
    decompositions, qpass's included) and runs them eagerly."""
    from torch._dynamo import register_backend
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    import qpass.kernels.ops  # noqa: F401  (registers the ops and their decompositions)
    import qpass.lowering.guarded_rows  # noqa: F401  (registers restore_guarded_rows and its decomposition)
    from qpass.kernels.define import install_inductor_decompositions

    install_inductor_decompositions()
    seen = []

    def keep(gm, example_inputs):
        seen.append(gm)
        return gm.forward

    register_backend(aot_autograd(fw_compiler=keep, decompositions=select_decomp_table()),
                     name="qpass_test_inductor_inputs")
    return seen


@pytest.mark.parametrize("preset, static", [("w4a8-qsm", True), ("w4a4-qsm", True), ("w4a8", False)])
def test_under_inductor_a_static_quantizer_is_fused_into_its_producer(preset, static):
    """Inductor compiles a static qpass::quantize_activation_int8 as its reference math (kernels/define.py
    register_inductor_decomposition), so it fuses into the op that produces its input instead of launching a
    kernel of its own (4 per layer per decode step): the graphs inductor gets have none left and give the same
    logits. A dynamic quantizer (per-row absmax first) stays the op's kernel."""
    seen = _inductor_inputs()
    seen.clear()
    model = tiny_model("llama")
    ids = _ids()
    plain = qpass.compile(model, preset, _calib(), progress=False, copy=True)
    inner = qpass.compile(model, preset, _calib(), progress=False, copy=True, compiler="qpass_test_inductor_inputs")
    with torch.no_grad():
        assert torch.allclose(inner(ids).logits, plain(ids).logits, atol=1e-5)
    op = torch.ops.qpass.quantize_activation_int8.default
    calls = sum(n.target is op for g in seen for n in g.graph.nodes)
    gemms = sum(n.target is torch.ops.qpass.w4a8_linear.default for g in seen for n in g.graph.nodes)
    assert gemms > 0 and (calls == 0 if static else calls == gemms), (calls, gemms)


def test_under_inductor_the_kept_prefix_rows_are_scattered_into_the_gemm_output():
    """QSM's kept prefix (keep_first) is a slice_scatter of the float rows into the GEMM's output under inductor,
    which writes it in place, instead of restore_guarded_rows' kernel, which copies the whole output: no call is
    left in the graphs inductor gets, and the logits are the FX path's."""
    seen = _inductor_inputs()
    seen.clear()
    model = tiny_model("llama")
    ids = _ids()
    assert ids.shape[-1] > 1  # a prefill: the guard changes its first row
    plain = qpass.compile(model, "w4a8-qsm", _calib(), progress=False, copy=True)
    inner = qpass.compile(model, "w4a8-qsm", _calib(), progress=False, copy=True, compiler="qpass_test_inductor_inputs")
    with torch.no_grad():
        assert torch.allclose(inner(ids).logits, plain(ids).logits, atol=1e-5)
    nodes = [n for g in seen for n in g.graph.nodes]
    assert not any(n.target is torch.ops.qpass.restore_guarded_rows.default for n in nodes)
    gemms = sum(n.target is torch.ops.qpass.w4a8_linear.default for n in nodes)
    scatters = sum(n.target is torch.ops.aten.slice_scatter.default for n in nodes)
    assert gemms > 0 and scatters == gemms, (scatters, gemms)


@pytest.mark.parametrize("shape", [(5, 64), (1, 64), (2, 1, 64), (2, 3, 64)])
@pytest.mark.parametrize("keep_first", [1, 2, 4])
def test_the_prefix_guard_decomposition_equals_the_op(shape, keep_first):
    """Inputs shorter than, as long as and longer than the kept prefix, with and without a batch axis: the
    slice_scatter form gives the op's kernel's output bit for bit (a sequence no longer than the prefix unchanged)."""
    from qpass.kernels import formats as F
    from qpass.lowering.guarded_rows import _prefix_rows_inline

    g = torch.Generator().manual_seed(keep_first)
    q, s, z = F.quantize_int4(torch.randn(16, 64, generator=g), 32, False)
    p = F.pack_int4(q)
    scale = torch.rand(64, generator=g) * 0.1 + 0.01
    x, y = torch.randn(*shape, generator=g), torch.randn(*shape[:-1], 16, generator=g)
    args = (y, x, scale, None, 4, keep_first, 0.0, None, p, s, 32, None, z)
    out = _prefix_rows_inline(*args)
    assert torch.equal(out, torch.ops.qpass.restore_guarded_rows.default(*args))
    assert torch.equal(out, y) == (shape[-2] <= keep_first)


def test_the_quantizer_decomposition_traces_under_dynamic_shapes():
    """The qpass backend compiles with symbolic batch × length: the decomposition (gather with zero padding, the
    step expanded to one per row) traces there too and gives the op's codes and steps at every length."""
    seen = _inductor_inputs()
    seen.clear()
    op = torch.ops.qpass.quantize_activation_int8.default
    C = 48
    g = torch.cat([torch.randperm(C, generator=torch.Generator().manual_seed(0)), torch.tensor([C, C + 3, 5])])
    zero = torch.randint(-2, 2, (C + 3,), generator=torch.Generator().manual_seed(1)).float()
    step = torch.tensor([0.05])

    def f(x):
        return op(torch.nn.functional.silu(x), step, 7, zero, g)

    compiled = torch.compile(f, backend="qpass_test_inductor_inputs", dynamic=True)
    for T in (1, 7, 33):
        x = torch.randn(2, T, C, generator=torch.Generator().manual_seed(T))
        (q, s), (rq, rs) = compiled(x), f(x)
        assert q.shape == (2, T, C + 3) and torch.equal(q, rq) and torch.equal(s, rs)
    assert seen and not any(n.target is op for gm in seen for n in gm.graph.nodes)
