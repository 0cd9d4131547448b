"""A model from qpass.compile never silently runs its original full-precision forward.

Batch and sequence dims are dynamic (one graph per kind of call, not per shape), and any fallback of Dynamo to
the original forward (recompile limit, torch.compile disabled) raises `EagerFallbackError`.
"""
import pytest
import torch

import qpass
from qpass.capture import EagerFallbackError, compile_forward
from tiny_models import tiny_model

TORCH = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])

# 20 (batch, length) shapes: batch 1 to 64, length 1 to 2048
SHAPES = [(1, 8), (1, 1), (64, 1), (64, 3), (2, 300), (1, 2048), (3, 17), (5, 1), (7, 64), (1, 2),
          (16, 9), (2, 2), (64, 12), (9, 33), (4, 128), (1, 100), (32, 5), (6, 1), (2, 2048), (11, 7)]


@pytest.fixture(scope="module")
def w8a8():
    model = tiny_model("llama")
    return model, qpass.compile(model, "w8a8", progress=False, copy=True)


def test_shapes_stay_quantized(w8a8):
    model, qmodel = w8a8
    counter = qmodel.qpass_state.graph_counter
    calls0 = counter.calls
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 256, (1, 24), generator=gen)
    with torch.no_grad():
        ref_row = qmodel(input_ids=probe, use_cache=False).logits[0]
        full = model(input_ids=probe, use_cache=False).logits[0]
        graphs0 = counter.graphs
        for b, t in SHAPES:  # called as users and `generate` call: the default keyword arguments (a K/V cache)
            ids = torch.randint(0, 256, (b, t), generator=gen)
            logits = qmodel(input_ids=ids).logits
            assert logits.shape == (b, t, 256)
        # prefill and one-token decode: the two graphs HF's code paths need; batch 1 shares the batched graph
        # (torch < 2.13: SDPA's shape function guards on batch == 1, so batch 1 gets its own two)
        assert counter.graphs - graphs0 <= (2 if TORCH >= (2, 13) else 4), counter.graphs - graphs0
        # per-token dynamic int8: a row's quantized output does not depend on the batch it is in
        ids = torch.randint(0, 256, (64, 24), generator=gen)
        ids[37] = probe[0]
        batched = qmodel(input_ids=ids, use_cache=False).logits[37]
    # without a cache or a mask, HF's packed-sequence check branches on batch == 1: one more graph at most
    assert counter.graphs <= 7, counter.graphs
    assert counter.calls - calls0 == len(SHAPES) + 2  # every call ran a qpass-compiled graph (a fallback raises)
    assert torch.allclose(batched, ref_row, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ref_row, full, atol=1e-4)  # quantized, not the full-precision forward
    assert all(v in ("w8a8", "attention") for v in qmodel.qpass_state.lowering.values()), qmodel.qpass_state.lowering


def test_lowered_matches_fake_quant_at_any_shape(w8a8):
    """Dynamic graphs compute what the fake-quant reference (lower=False) computes, at every kind of shape."""
    model, qmodel = w8a8
    ref = qpass.compile(model, "w8a8", progress=False, copy=True, lower=False)
    calls0 = ref.qpass_state.graph_counter.calls  # the capture's own call (analysis) runs the same forward
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b, t in [(1, 1), (64, 3), (2, 100), (1, 40)]:
            ids = torch.randint(0, 256, (b, t), generator=gen)
            got, want = qmodel(input_ids=ids, use_cache=False).logits, ref(input_ids=ids, use_cache=False).logits
            full = model(input_ids=ids, use_cache=False).logits
            # equal up to rare int8 rounding ties (the kernel's x * (1/s) vs the reference's x / s)
            err = ((got - want).norm() / want.norm()).item()
            assert err < 1e-4, (b, t, err)
            assert ((full - want).norm() / want.norm()).item() > 10 * err  # and far from full precision
    assert ref.qpass_state.graph_counter.graphs <= 4 and ref.qpass_state.graph_counter.calls - calls0 == 4


def test_generate_still_works(w8a8):
    _, qmodel = w8a8
    with torch.no_grad():
        out = qmodel.generate(torch.randint(0, 256, (2, 5)), attention_mask=torch.ones(2, 5, dtype=torch.long),
                              max_new_tokens=4, do_sample=False, pad_token_id=0)
        one = qmodel.generate(torch.randint(0, 256, (1, 7)), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9) and one.shape == (1, 11)


def test_recompile_limit_raises_instead_of_falling_back():
    model = tiny_model("llama")
    seen = []
    forward, counter = compile_forward(model, seen.append, recompile_limit=1)
    with torch.no_grad():
        forward(input_ids=torch.randint(0, 256, (2, 8)), use_cache=False)
        forward(input_ids=torch.randint(0, 256, (3, 20)), use_cache=False)  # dynamic: same graph
        assert counter.graphs == len(seen) == 1 and counter.calls == 2
        with pytest.raises(EagerFallbackError, match="full-precision forward.*recompile limit 1"):
            forward(input_ids=torch.randint(0, 256, (2, 1)), use_cache=False)  # a decode shape: new graph
        forward(input_ids=torch.randint(0, 256, (5, 3)), use_cache=False)  # cached graphs keep working
    assert counter.calls == 3


def test_symbolic_traces_run_without_the_fake_tensor_cache_and_leave_torch_config_alone():
    """tracing_config: FakeTensor's dispatch cache is off while a dynamic-shape graph is traced (its symbolic cache
    hits cost more than they save), left as it is for static shapes, and the global setting is restored."""
    import torch._dynamo

    before = torch._dynamo.config.fake_tensor_cache_enabled
    for dynamic, expected in ((None, False), (False, before)):
        seen = []
        forward, _ = compile_forward(tiny_model("llama"), lambda cap: seen.append(
            torch._dynamo.config.fake_tensor_cache_enabled), dynamic=dynamic)
        with torch.no_grad():
            forward(input_ids=torch.randint(0, 256, (2, 8)), use_cache=False)
        assert seen == [expected], dynamic
        assert torch._dynamo.config.fake_tensor_cache_enabled == before


def test_static_forward_ignores_dynamic_marks_left_on_its_inputs():
    """A tensor once passed to a dynamic forward keeps Dynamo's dynamic marks; a `dynamic=False` forward (the path
    of qpass.compile(..., compiler=...)) still traces it with static shapes and leaves it unchanged."""
    ids = torch.randint(0, 256, (1, 8))
    dynamic, _ = compile_forward(tiny_model("llama"), lambda cap: None)
    symbolic = []
    static, _ = compile_forward(tiny_model("llama"), lambda cap: symbolic.append(
        [n.name for n in cap.graph.find_nodes(op="placeholder") if isinstance(n.meta.get("example_value"), torch.SymInt)]),
        dynamic=False)
    with torch.no_grad():
        dynamic(input_ids=ids, use_cache=False)
        static(input_ids=ids, use_cache=False)
    assert symbolic == [[]]
    assert ids.shape == (1, 8) and ids._base is None


def test_disabled_compile_raises(w8a8):
    _, qmodel = w8a8
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        with pytest.raises(EagerFallbackError, match="unquantized"):
            qmodel(input_ids=torch.randint(0, 256, (1, 4)), use_cache=False)


def test_frames_after_a_graph_break_inside_the_model_are_quantized_too():
    """`output_hidden_states=True` graph-breaks inside transformers' output recording: Dynamo then compiles the
    inner model's frame through the same backend, with module paths relative to that frame. Its sites must still
    be found (model-level names) and quantized — the result equals the unbroken call's, not the FP model's."""
    model = tiny_model("llama")
    q = qpass.compile(model, "w4a16", progress=False, copy=True)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain, broken, fp = q(ids).logits, q(ids, output_hidden_states=True), model(ids).logits
    assert len(broken.hidden_states) == 3
    assert torch.allclose(broken.logits, plain, atol=1e-6) and not torch.allclose(broken.logits, fp, atol=1e-4)
