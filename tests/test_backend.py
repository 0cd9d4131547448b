"""torch.compile(model, backend="qpass", options={"recipe": ...}): same plan/transform as qpass.compile."""
import pytest
import torch
from torch._dynamo.utils import counters

import qpass
from qpass import data, models

from tiny_models import tiny_model


def _ids(n=2, t=24, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("arch, recipe, inner", [("llama", "w4a16", "inductor"), ("gpt2", "w8a8", "aot_eager")])
def test_backend_matches_qpass_compile(arch, recipe, inner):
    torch._dynamo.reset()
    model = tiny_model(arch)
    ref = qpass.compile(model, recipe, progress=False, copy=True)
    compiled = torch.compile(model, backend="qpass", options={"recipe": recipe, "backend": inner}, fullgraph=True)
    ids = _ids()
    with torch.no_grad():
        out, expect = compiled(ids).logits, ref(ids).logits
    assert _rel(out, expect) < 1e-4
    assert not any(p.dtype == torch.int8 for p in model.parameters())  # the user's model is untouched


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 13),
                    reason="an unbacked batch dim through HF's SDPA call needs torch >= 2.13 (2.11 guards on batch == 1)")
def test_no_recompiles_across_batch_and_sequence_lengths():
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(tiny_model("qwen3"), backend="qpass", options={"recipe": "w8a8", "backend": "aot_eager"},
                             fullgraph=True, dynamic=True)
    graphs = []
    with torch.no_grad():
        for bs in range(1, 9):
            ids = _ids(bs, 5 + 3 * bs, seed=bs)
            torch._dynamo.decorators.mark_unbacked(ids, 0)  # else Dynamo specializes batch 1 (0/1 specialization)
            compiled(ids)
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs == [1] * 8, graphs


def test_calibration_recipes_and_bad_options_are_refused():
    torch._dynamo.reset()
    model = tiny_model("llama")
    with pytest.raises(Exception, match="needs calibration data"):
        torch.compile(model, backend="qpass", options={"recipe": "w4a8-qsm"})(_ids())
    torch._dynamo.reset()
    with pytest.raises(Exception, match="unknown key"):
        torch.compile(model, backend="qpass", options={"recipe": "w4a16", "bits": 3})(_ids())


@pytest.mark.slow
def test_backend_on_smollm2_matches_qpass_compile():
    torch._dynamo.reset()
    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", 256).reshape(1, -1)
    ref = qpass.compile(model, "w8a8", progress=False, copy=True)
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w8a8", "backend": "aot_eager"}, fullgraph=True)
    with torch.no_grad():
        out, expect = compiled(ids).logits, ref(ids).logits
    assert _rel(out, expect) <= 1e-2


def test_mode_reaches_inductor_as_config_patches(monkeypatch):
    """options={"mode": "reduce-overhead"} with backend="qpass": inductor gets that mode's config patches."""
    import torch._inductor.compile_fx as cfx

    seen = {}

    def fake_compile_fx(gm, example_inputs, **kwargs):
        seen.update(kwargs)
        return gm.forward

    monkeypatch.setattr(cfx, "compile_fx", fake_compile_fx)
    torch._dynamo.reset()
    compiled = torch.compile(tiny_model("llama"), backend="qpass", options={"recipe": "w4a16", "mode": "reduce-overhead"})
    with torch.no_grad():
        compiled(_ids())
    assert seen.get("config_patches", {}).get("triton.cudagraphs") is True, seen
    torch._dynamo.reset()
    with pytest.raises(Exception, match="mode 'fast'"):
        torch.compile(tiny_model("llama"), backend="qpass", options={"recipe": "w4a16", "mode": "fast"})(_ids())


def test_static_cache_decode_keeps_kv_projections():
    """A StaticCache writes K/V with `index_copy_` (no users): lowering's dead-code pass must keep it and the
    k/v projections feeding it. Decode through the backend matches the fake-quant graph (lower=False)."""
    import inspect

    import transformers as tf

    kw = "cache" if "cache" in inspect.signature(tf.LlamaForCausalLM.forward).parameters else "past_key_values"
    model = tiny_model("llama")
    prompt, step = _ids(1, 12, seed=3), _ids(1, 1, seed=4)
    logits = {}
    for lower in (True, False):
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="qpass", options={"recipe": "w4a16", "lower": lower, "backend": "eager"})
        cache = tf.StaticCache(config=model.config, max_cache_len=16)
        with torch.no_grad():
            compiled(input_ids=prompt, use_cache=True, **{kw: cache})
            logits[lower] = compiled(input_ids=step, use_cache=True, **{kw: cache}).logits
    assert _rel(logits[True], logits[False]) < 1e-4


def test_sale_with_given_taus_is_lowered_by_the_backend_on_every_graph():
    """A weights + SALE recipe with τ in its options: each graph (a new length recompiles, reusing the cached
    plans) gets qpass::sale_attention; the output matches qpass.compile's. Without τ the backend refuses."""
    from torch._dynamo import register_backend

    from qpass import ActivationSpec, PassSpec, Recipe, WeightSpec

    taus = {f"model.layers.{i}.self_attn": [0.05, 0.2, 0.0, 0.1] for i in range(2)}
    opts = dict(block_m=16, block_n=16, sink=16, window=16, min_seq_len=0, taus=taus)
    recipe = Recipe("w8a8-sale", weights=WeightSpec(bits=8, group_size=None),
                    activations=ActivationSpec(bits=8, granularity="per_token"), passes=[PassSpec("sale", opts)])
    sale_nodes = []

    @register_backend(name="qpass_test_spy")
    def spy(gm, example_inputs):
        sale_nodes.append(sum("sale_attention" in str(n.target) for n in gm.graph.nodes))
        return gm.forward

    model = tiny_model("llama")
    ref = qpass.compile(model, recipe, progress=False, copy=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="qpass", options={"recipe": recipe, "backend": "qpass_test_spy"}, dynamic=False)
    with torch.no_grad():
        for t in (70, 90):
            ids = _ids(1, t, seed=t)
            assert _rel(compiled(ids).logits, ref(ids).logits) < 1e-4
    assert sale_nodes == [2, 2], sale_nodes
    torch._dynamo.reset()
    no_taus = Recipe("sale-cal", weights=None, passes=[PassSpec("sale", {"block_m": 16, "block_n": 16})])
    with pytest.raises(Exception, match="give `taus`"):
        torch.compile(model, backend="qpass", options={"recipe": no_taus})(_ids())


def test_a_second_model_of_the_same_class_runs_its_own_weights():
    """Dynamo reuses compiled code across modules of one class (it guards parameters on shape, not identity), and
    the graph bakes in the packed weights of the model it was planned for: a second model must get its own."""
    torch._dynamo.reset()
    first, second = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    options = {"recipe": "w8a8", "backend": "aot_eager"}
    ids = _ids()
    with torch.no_grad():
        expect = qpass.compile(second, "w8a8", progress=False, copy=True)(ids).logits
        torch.compile(first, backend="qpass", options=options)(ids)
        with pytest.warns(UserWarning, match="planned for another model's weights"):
            out = torch.compile(second, backend="qpass", options=options)(ids).logits
        again = torch.compile(second, backend="qpass", options=options)(ids).logits  # cached: no new plan
    assert _rel(out, expect) < 1e-4 and torch.equal(out, again)


def test_a_plan_follows_the_model_to_another_dtype():
    """model.to(dtype) keeps the Parameter objects; the next compilation must not reuse the float32 plan."""
    torch._dynamo.reset()
    model = tiny_model("llama")
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w8a16", "backend": "eager"})
    with torch.no_grad():
        compiled(_ids())
        model.to(torch.bfloat16)
        out = compiled(_ids()).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_weight_editing_passes_are_refused_by_the_backend():
    from qpass import ActivationSpec, PassSpec, Recipe

    recipe = Recipe("s", weights=None, activations=ActivationSpec(granularity="per_token"),
                    passes=[PassSpec("smoothquant")])
    torch._dynamo.reset()
    with pytest.raises(Exception, match="needs calibration data|edit the model's weights"):
        torch.compile(tiny_model("llama"), backend="qpass", options={"recipe": recipe})(_ids())


def test_generate_over_a_static_cache_with_the_compiled_forward():
    """The documented way to CUDA graphs from `generate` (docs/lowering.md "CUDA graphs from generate"): the
    forward compiled by the qpass backend, an eagerly allocated static cache, HF's own auto-compile off. Each step's logits are the
    quantized model's (a no-cache greedy loop over qpass.compile's model of the same recipe), not the original's."""
    model = tiny_model("llama").eval()
    prompt = _ids(1, 8, seed=5)
    quantized = qpass.compile(model, "w4a16", progress=False, copy=True)

    def greedy(m):
        ids, steps = prompt, []
        with torch.no_grad():
            for _ in range(4):
                steps.append(m(input_ids=ids).logits[:, -1].float())
                ids = torch.cat([ids, steps[-1].argmax(-1, keepdim=True)], dim=1)
        return ids, torch.stack(steps)

    want_ids, want = greedy(quantized)
    _, original = greedy(model)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, backend="qpass",
                                  options={"recipe": "w4a16", "mode": "reduce-overhead"})
    with torch.no_grad():
        cache = qpass.static_cache(model, max_cache_len=16)
        out = model.generate(prompt, max_new_tokens=4, do_sample=False, past_key_values=cache,
                             disable_compile=True, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
    got = torch.stack([l.float() for l in out.logits])
    assert torch.equal(out.sequences, want_ids)
    assert _rel(got, want) < 1e-3 < _rel(got, original), (_rel(got, want), _rel(got, original))


def test_weights_and_static_cache_stay_static_inputs_for_cuda_graphs(monkeypatch):
    """AOT autograd must see the rewritten graph as Dynamo's (its metadata and parameter sources): only then are
    the weights and an eagerly allocated StaticCache's tensors static inputs, which inductor's CUDA graphs
    ("reduce-overhead") need — otherwise each replay copies every weight and graphs that update the cache in
    place are skipped. Checked where AOT autograd computes them (aot_eager: no CUDA needed)."""
    import torch._functorch.aot_autograd as aot

    if not hasattr(aot, "_try_get_metadata_from_dynamo"):
        pytest.skip("this torch computes static inputs elsewhere")
    seen = []
    original = aot._try_get_metadata_from_dynamo

    def spy(mod, *args):
        out = original(mod, *args)
        seen.append((len([n for n in mod.graph.nodes if n.op == "placeholder"]) + len(list(mod.buffers())), out[1]))
        return out

    monkeypatch.setattr(aot, "_try_get_metadata_from_dynamo", spy)
    model = tiny_model("llama")
    cache = qpass.static_cache(model, max_cache_len=16)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w4a16", "backend": "aot_eager"},
                             dynamic=False)
    with torch.no_grad():
        compiled(input_ids=_ids(1, 8), past_key_values=cache, use_cache=True)
        compiled(input_ids=_ids(1, 1), past_key_values=cache, use_cache=True)
    assert seen
    for inputs, static in seen:  # everything but the token ids (and positions) is static
        assert inputs - len(static) <= 2, (inputs, static)


def _live_tensor_bytes() -> int:
    import gc
    gc.collect()
    storages = {}
    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor) and o.device.type == "cpu":
                storages[o.untyped_storage().data_ptr()] = o.untyped_storage().nbytes()
        except (ReferenceError, RuntimeError):  # dead weak proxies, tensors without storage
            pass
    return sum(storages.values())


def test_new_prompt_lengths_reuse_the_packed_weights():
    """dynamic=False compiles one graph per prompt length; every graph must read the same packed weights (one
    transform per plan) — packing them again per graph grew memory by a quantized model per length."""
    import transformers as tf

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = tf.LlamaForCausalLM(cfg).eval()
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w4a16", "backend": "eager"}, dynamic=False)
    with torch.no_grad():
        before = _live_tensor_bytes()
        compiled(_ids(1, 8))
        first = _live_tensor_bytes() - before  # the quantized weights (plan and packed), once
        for t in (12, 16, 20):
            compiled(_ids(1, t))
        more = _live_tensor_bytes() - before - first
    assert first > 0.1 * sum(p.numel() * p.element_size() for p in model.parameters())
    assert more < 0.1 * first, (first, more)


def test_forget_drops_the_plans_kept_for_a_models_weights():
    from qpass import backend

    torch._dynamo.reset()
    model = tiny_model("llama")
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w4a16", "backend": "eager"})
    with torch.no_grad():
        compiled(_ids())
    assert any(p in backend._PLANS for p in model.parameters())
    backend.forget(model)
    assert not any(p in backend._PLANS for p in model.parameters())
