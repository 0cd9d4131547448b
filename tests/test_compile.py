"""qpass.compile on tiny architectures: outputs, generate, report, calibration and its error handling."""
import math

import pytest
import torch

import qpass
from qpass import Recipe, WeightSpec, ActivationSpec
from qpass.numerics import fake_quant, fake_quant_per_token

from tiny_models import CONFIGS, tiny_model


def _ids(n=2, t=24, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_w8a8_close_to_fp_and_generate_works(arch):
    model = tiny_model(arch)
    q = qpass.compile(model, "w8a8", progress=False, copy=True)
    ids = _ids()
    with torch.no_grad():
        ref, out = model(ids), q(ids)
    assert type(out) is type(ref)
    rel = float((out.logits - ref.logits).norm() / ref.logits.norm())
    assert 0 < rel < 0.05  # quantized (not identical) yet close
    gen = q.generate(ids[:1, :4], max_new_tokens=5, do_sample=False)
    assert gen.shape == (1, 9)
    rep = qpass.report(q)
    # every linear but lm_head quantized; MoE routers and (w8a8: no expert kernel takes int8 inputs) expert tensors
    # stay in full precision with their reasons
    kept = [r for r in rep.rows if r.reason.startswith(("router", "experts take no quantized inputs"))]
    assert rep.summary()["quantized"] == len(rep.rows) - 1 - len(kept) and rep.summary()["graph_breaks"] == 0
    assert all(r.producer != "experts" or r in kept for r in rep.rows)
    assert next(r for r in rep.rows if r.name == "lm_head").reason.startswith("ignored")


def test_fake_quant_graph_matches_a_hand_written_reference():
    """w4a4 per-token on a tiny Llama equals the same model with every linear replaced by explicit numerics."""
    model = tiny_model("llama")
    q = qpass.compile(model, "w4a4", progress=False, copy=True)
    ref_model = tiny_model("llama")
    for name, mod in ref_model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            mod.weight.data = fake_quant(mod.weight.data, 4, None)
            mod.register_forward_pre_hook(lambda m, args: (fake_quant_per_token(args[0], 4),))
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(q(ids).logits, ref_model(ids).logits, rtol=1e-4, atol=1e-4)


def test_original_model_is_untouched_and_copies_are_independent():
    model = tiny_model("qwen2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q4 = qpass.compile(model, "w4a16", progress=False, copy=True)
    q8 = qpass.compile(model, "w8a16", progress=False, copy=True)
    ids = _ids()
    with torch.no_grad():
        fp, a, b = model(ids).logits, q4(ids).logits, q8(ids).logits
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    e4, e8 = (fp - a).norm(), (fp - b).norm()
    assert e8 < e4 / 4  # each copy runs its own recipe (no shared compiled graph)
    assert q4.qpass_state.graph_counter.graphs >= 1 and q8.qpass_state.graph_counter.graphs >= 1


@pytest.mark.parametrize("lower", [True, False])
def test_float_weights_of_quantized_sites_are_released(lower):
    """The graphs read a quantized site's integer or packed weights, never its float one: that memory is released
    (the parameters point at one shared NaN buffer), the outputs stay those of the plan, and a weight shared with
    a tensor that stays (an embedding tied to a quantized lm_head) is kept."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = tf.LlamaForCausalLM(cfg).eval()
    recipe = {"weights": {"bits": 4, "group_size": 32}, "ignore": []}  # lm_head too (tied to the embedding)
    q = qpass.compile(model, recipe, progress=False, copy=True, lower=lower)
    plan = q.qpass_state.plan
    tied = plan["lm_head"].weight_fqn  # the embedding's parameter, under its first name
    assert plan["lm_head"].weight is not None and q.get_parameter(tied) is q.get_parameter("lm_head.weight")
    released = [sp.weight_fqn for sp in plan.values() if sp.weight is not None and sp.weight_fqn != tied]
    storages = {q.get_parameter(n).untyped_storage().data_ptr() for n in released}
    assert len(released) == 14 and len(storages) == 1 and all(q.get_parameter(n).isnan().all() for n in released)
    assert q.get_parameter(tied).isfinite().all()  # the embedding still reads it
    assert any("float weights released" in line for line in q.qpass_state.plan.log)
    ids = _ids()
    with torch.no_grad():
        out, ref = q(ids).logits, model(ids).logits
        again = q(_ids(t=11)).logits  # a new shape, a new graph: still no float weight read
    assert out.isfinite().all() and again.isfinite().all()
    assert 0 < float((out - ref).norm() / ref.norm()) < 0.2


def test_new_shapes_keep_the_quantized_graph():
    model = tiny_model("llama")
    q = qpass.compile(model, "w4a16", progress=False, copy=True)
    for t in (5, 9, 17, 33):
        ids = _ids(t=t, seed=t)
        with torch.no_grad():
            err = (q(ids).logits - model(ids).logits).abs().max()
        assert err > 0  # still quantized after any recompilation


def test_ignore_patterns_glob_and_regex():
    model = tiny_model("llama")
    r = Recipe(weights=WeightSpec(bits=8, group_size=None), ignore=["lm_head", "*.mlp.down_proj", "re:layers\\.1\\.self_attn\\.[qk]_proj"])
    rep = qpass.report(qpass.compile(model, r, progress=False, copy=True))
    fp = {row.name for row in rep.rows if row.status != "quantized"}
    assert fp == {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj",
                  "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"}


def test_static_activations_need_calibration_and_use_it():
    model = tiny_model("mistral")
    with pytest.raises(ValueError, match="needs calibration"):
        qpass.compile(model, "w8a8-static")
    q = qpass.compile(model, "w8a8-static", calib=[_ids(seed=1), _ids(seed=2)], progress=False, copy=True)
    plan = q.qpass_state.plan["model.layers.0.self_attn.q_proj"]
    assert plan.activation.granularity == "per_channel" and plan.activation.scale.shape == (64,)
    assert plan.activation.scale.max() > 0
    ids = _ids(seed=3)
    with torch.no_grad():
        rel = (q(ids).logits - model(ids).logits).norm() / model(ids).logits.norm()
    assert 0 < rel < 0.15  # unseen tokens go beyond the calibrated ranges and are clipped


def test_group_size_that_does_not_divide_k_is_handled():
    model = tiny_model("llama")  # hidden 64, ffn 96: group 40 leaves short last groups
    r = Recipe(weights=WeightSpec(bits=4, group_size=40))
    q = qpass.compile(model, r, progress=False, copy=True)
    down = q.qpass_state.plan["model.layers.0.mlp.down_proj"].weight
    assert down.scale.shape == (64, 3)  # 96 = 40 + 40 + 16
    with torch.no_grad():
        assert torch.isfinite(q(_ids()).logits).all()


def test_percentile_and_minmax_observers():
    model = tiny_model("llama")
    calib = [_ids(seed=s) for s in range(3)]
    for obs, sym in (("percentile", True), ("minmax", False)):
        r = Recipe(weights=None, activations=ActivationSpec(bits=8, granularity="per_channel", observer=obs, symmetric=sym, percentile=99.0))
        q = qpass.compile(model, r, calib=calib, progress=False, copy=True)
        a = q.qpass_state.plan["model.layers.0.mlp.down_proj"].activation
        assert torch.isfinite(a.scale).all() and (a.zero is None) == sym
        with torch.no_grad():
            assert torch.isfinite(q(_ids()).logits).all()
