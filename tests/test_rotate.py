"""Pass `rotate` (QuaRot): the rotated full-precision model computes the same logits as the original (the key
invariant), refusals leave the model unchanged with the reason, and the rotation presets run end to end lowered."""
from pathlib import Path

import warnings

import pytest
import torch
import transformers as tf

import qpass
from qpass.schema import RecipeError

from test_lowering import _lowered_twin
from tiny_models import tiny_model

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
ROTATE_ONLY = {"weights": None, "passes": [{"name": "rotate"}]}


def _logits(m, ids):
    with torch.no_grad():
        out = m(input_ids=ids, use_cache=False)
    return (out.logits if hasattr(out, "logits") else out).float()  # a loaded program returns the logits


def _ids(vocab, seed=1, shape=(2, 24)):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _assert_rotated_equal(model, ids, recipe=ROTATE_ONLY):
    ref = _logits(model, ids)
    q = qpass.compile(model, recipe, lower=False, progress=False, copy=True)
    out = _logits(q, ids)
    log = "\n".join(q.qpass_state.plan.log)
    assert "residual stream" in log and "not applied" not in log, log
    assert q.qpass_state.plan.rotations, "no online Hadamard planned"
    # the weights really changed (a rotation that did nothing would pass the equality trivially)
    emb = next(n for n, _ in model.named_parameters() if "embed" in n)
    assert (q.get_parameter(emb) - model.get_parameter(emb)).abs().max() > 1e-2
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    return q


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3"])
def test_rotated_fp_model_equals_the_original_tiny(arch):
    model = tiny_model(arch).float()
    _assert_rotated_equal(model, _ids(256))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_online_hadamard_before_o_proj_keeps_the_model_equal(arch):
    """`online_attention: true`: o_proj's input is rotated at run time too (hidden 64 = 4 · 16 heads of 16)."""
    model = tiny_model(arch).float()
    recipe = {"weights": None, "passes": [{"name": "rotate", "online_attention": True}]}
    q = _assert_rotated_equal(model, _ids(256), recipe)
    online = set(q.qpass_state.plan.rotations)
    assert {n for n in online if n.endswith("o_proj")} == {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}
    assert any(n.endswith("down_proj") for n in online)


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_rotated_fp_model_equals_the_original_stories260K():
    """A real fp32 Llama: tied embeddings? no; FFN 172 = 43 · 4 (the online Hadamard's 43 × 43 orthogonal mix)."""
    model = tf.AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    q = _assert_rotated_equal(model, _ids(model.config.vocab_size, shape=(2, 64)))
    mixes = {r.mix.shape[0] for r in q.qpass_state.plan.rotations.values()}
    assert mixes == {43}


def test_tied_lm_head_is_untied_and_the_model_still_equal():
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a final norm scale that is not 1: folding it into a tied table would be wrong
        model.model.norm.weight.uniform_(0.5, 1.5)
    q = _assert_rotated_equal(model, _ids(256))
    assert q.lm_head.weight is not q.model.embed_tokens.weight
    assert any("untied" in line for line in q.qpass_state.plan.log)


@pytest.mark.parametrize("arch, reason", [
    ("gemma2", "not a linear's output"),  # post-norms between o_proj / down_proj and the residual add
    ("gpt2", "layer_norm"),  # LayerNorm subtracts the mean
    ("mixtral", "MoE"),
])
def test_refused_rotation_leaves_the_model_unchanged_with_the_reason(arch, reason):
    model = tiny_model(arch).float()
    ids = _ids(256)
    with pytest.warns(UserWarning, match="rotate: not applied"):
        q = qpass.compile(model, ROTATE_ONLY, lower=False, progress=False, copy=True)
    log = "\n".join(q.qpass_state.plan.log)
    assert "rotate: not applied" in log and reason in log, log
    assert not q.qpass_state.plan.rotations
    torch.testing.assert_close(_logits(q, ids), _logits(model, ids), rtol=0, atol=0)


def test_rotate_must_be_the_first_pass():
    with pytest.raises(RecipeError, match="rotate must be the first pass"):
        qpass.Recipe.from_dict({"activations": {"granularity": "per_channel"},
                                "passes": [{"name": "qsm"}, {"name": "rotate"}]})


@pytest.mark.parametrize("preset, online", [("w4a4-rot", 2), ("w4a4-rot-qsm", 2)])
def test_rotation_presets_lower_and_match_their_fake_quant_graph(preset, online):
    model = tiny_model("llama").float()
    calib = [_ids(256, seed=i, shape=(2, 32)) for i in range(2)]
    q = qpass.compile(model, preset, calib, progress=False, lower=False)
    lowered, outcomes, graphs = _lowered_twin(q)
    ids = _ids(256)
    ref = _logits(q, ids)
    with torch.no_grad():
        out = lowered(input_ids=ids).logits
    plan = q.qpass_state.plan
    assert {outcomes[s] for s in plan} <= {"w4a8", "w4a8-static", "w4a8-static-guarded"}, outcomes
    assert float((out - ref).norm() / ref.norm()) < 1e-4
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert targets.count("qpass.hadamard.default") == len(plan.rotations) == online
    # the rotation is made once over the whole model, then calibration goes block by block
    assert any(line.startswith("calibration: block by block") for line in plan.log), plan.log
    assert any(line.startswith("rotate: residual stream") for line in plan.log), plan.log


@pytest.mark.parametrize("sequential", [True, False])
def test_qsm_keeps_the_inputs_of_online_hadamards_dynamic(sequential):
    """Static steps cannot follow an online Hadamard's spread outliers: w4a4-rot-qsm keeps its online Hadamards,
    and QSM gives exactly the sites they feed dynamic per-token activations (block by block or the whole model at
    once), unwarned."""
    model = tiny_model("llama").float()
    calib = [_ids(256, seed=i, shape=(2, 32)) for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        q = qpass.compile(model, "w4a4-rot-qsm", calib, progress=False, lower=False, sequential=sequential)
    plan = q.qpass_state.plan
    assert plan.rotations
    assert any(line.startswith("calibration: block by block") for line in plan.log) == sequential, plan.log
    for name, sp in plan.sites.items():
        if sp.activation is not None:
            assert (sp.activation.granularity == "per_token") == (name in plan.rotations), name
    assert any("keep dynamic per-token A4: they go through an online Hadamard" in line for line in plan.log)


def test_online_hadamards_before_static_steps_without_qsm_are_warned_about():
    recipe = {"weights": {"bits": 4, "group_size": 64}, "activations": {"bits": 4, "granularity": "per_channel"},
              "passes": [{"name": "rotate"}]}
    model = tiny_model("llama").float()
    calib = [_ids(256, seed=i, shape=(2, 32)) for i in range(2)]
    with pytest.warns(UserWarning, match="online Hadamards before static per-channel activation steps"):
        q = qpass.compile(model, recipe, calib, progress=False, lower=False)
    assert q.qpass_state.plan.rotations and any("online: false" in line for line in q.qpass_state.plan.log)


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_w4a4_rot_runs_end_to_end_lowered_on_stories260K():
    model = tf.AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    V = model.config.vocab_size
    calib = [_ids(V, seed=i, shape=(2, 64)) for i in range(2)]
    q = qpass.compile(model, "w4a4-rot", calib, progress=False, copy=True)
    rep = qpass.report(q)
    assert rep.quantized and all(r.lowering == "w4a8" for r in rep.quantized), [r.lowering for r in rep.quantized]
    ids = _ids(V, seed=9, shape=(1, 48))
    out, ref = _logits(q, ids), _logits(model, ids)
    assert torch.isfinite(out).all()
    # quantized, so not equal; but the rotated int4 model still tracks the original's predictions
    agree = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    assert 0.3 < agree, agree


def test_rotated_model_saves_and_reloads_with_its_online_hadamards(tmp_path):
    """qpass.save re-applies the transform to the torch.export graph: the reloaded program calls qpass::hadamard
    and gives the compiled model's logits (the untied lm_head, the folded norms and the mixes travel)."""
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    calib = [_ids(256, seed=i, shape=(2, 32)) for i in range(2)]
    q = qpass.compile(model, "w4a8-rot", calib, progress=False)
    qpass.save(q, tmp_path / "m")
    m = qpass.load(tmp_path / "m")
    ids = _ids(256, seed=5, shape=(1, 16))
    program = (tmp_path / "m").glob("*.pt2")
    assert any(b"qpass.hadamard" in p.read_bytes() or b"hadamard" in p.read_bytes() for p in program)
    torch.testing.assert_close(_logits(m, ids), _logits(q, ids), rtol=1e-4, atol=1e-4)
