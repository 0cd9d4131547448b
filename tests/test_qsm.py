"""QSM: exact step migration on every tiny architecture (and SmolLM2), the GQA tie, the quantized path."""
import re

import pytest
import torch

import qpass
from qpass import ActivationSpec, Recipe, WeightSpec
from qpass.migration import find_migrations
from qpass.recipe import CalibrationSpec, PassSpec

from tiny_models import CONFIGS, tiny_model


def _ids(n=2, t=24, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _migrate_only(model, calib, sort="step"):
    r = Recipe("m", weights=None, activations=None, passes=[PassSpec("qsm", {"quantize": False, "sort": sort})])
    return qpass.compile(model, r, calib, progress=False, copy=True)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_migration_without_rounding_is_exact(arch):
    model = tiny_model(arch)
    with torch.no_grad():  # make the steps far from 1 so a missed migration would show
        for n, p in model.named_parameters():
            if p.dim() == 1 and "norm" in n or n.endswith("ln_1.weight") or n.endswith("ln_2.weight"):
                p.mul_(torch.linspace(0.5, 2, p.numel()))
    q = _migrate_only(model, [_ids(seed=1)])
    ids = _ids()
    with torch.no_grad():
        ref, out = model(ids).logits, q(ids).logits
    assert float((out - ref).norm() / ref.norm()) <= 1e-5
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, q.state_dict()[k])]
    assert changed  # parameters really moved


def test_producers_found_from_the_graph():
    q = _migrate_only(tiny_model("llama"), [_ids(seed=1)])
    st = q.qpass_state
    migs = {tuple(m.sites): m for m in find_migrations(st.analysis, {s.name: s for s in st.analysis.linears if s.name != "lm_head"})}
    kinds = {k[0].rsplit(".", 1)[-1]: (m.kind, m.reason) for k, m in migs.items()}
    assert kinds["q_proj"][0] == "norm" and kinds["gate_proj"][0] == "norm"
    assert kinds["o_proj"][0] == "rows" and "v_proj" in kinds["o_proj"][1] and "GQA 4/2" in kinds["o_proj"][1]
    assert kinds["down_proj"][0] == "rows" and "up_proj" in kinds["down_proj"][1]
    o = next(m for k, m in migs.items() if k[0].endswith("layers.0.self_attn.o_proj"))
    f = o.tie(torch.arange(1.0, 65.0))
    # heads 0,1 share KV head 0 (head_dim 16): channel d of head 0 and of head 1 get the same factor (their max)
    assert torch.equal(f[:16], f[16:32]) and torch.equal(f[:16], torch.arange(17.0, 33.0))


@pytest.mark.parametrize("arch, folds", [("llama", True), ("gemma3", True), ("phi3", False), ("gpt2", False)])
def test_down_proj_order_lives_in_gate_and_up_rows(arch, folds):
    """A gated MLP's product act(g) * u is reordered exactly by reordering g's and u's rows together: the sorted
    order of down_proj's input is then in the weights and its quantizer gathers nothing at run time. Phi-3's fused
    gate_up (chunked) and GPT-2's plain MLP have no such producer and keep the gather."""
    q = _migrate_only(tiny_model(arch), [_ids(seed=1)])
    st = q.qpass_state
    migs = find_migrations(st.analysis, {s.name: s for s in st.analysis.linears if s.name != "lm_head"})
    down = [m for m in migs if m.sites[0].endswith(("down_proj", "c_proj")) and "mlp" in m.sites[0]]
    assert down and all(bool(m.reorder) == folds for m in down)
    if folds:
        assert sorted(p.name.rsplit(".", 1)[-1] for p in down[0].reorder) == ["gate_proj", "up_proj"]
        assert any("take their sorted channel order from their producers' rows" in line for line in st.plan.log)


def test_folded_order_gives_the_same_model_as_the_run_time_gather(monkeypatch):
    """The same W4A8 QSM model with the order folded into gate/up rows and with it gathered at run time: the
    down_proj sites lose their gather, the logits (fake-quant and lowered) stay the same."""
    import qpass.migration as migration

    r = Recipe("q", weights=WeightSpec(4, 32, symmetric=False), activations=ActivationSpec(8, "per_channel", False),
               passes=[PassSpec("qsm", {"keep_first": 1})], calibration=CalibrationSpec(skip_tokens=1))
    calib, ids = [_ids(4, 48, seed=1)], _ids(2, 40, seed=3)
    folded = qpass.compile(tiny_model("llama"), r, calib, progress=False, copy=True)
    monkeypatch.setattr(migration, "_elementwise_source", lambda *a: None)
    gathered = qpass.compile(tiny_model("llama"), r, calib, progress=False, copy=True)
    downs = [n for n in folded.qpass_state.plan.sites if n.endswith("down_proj")]
    assert downs and all(folded.qpass_state.plan[n].gather is None for n in downs)
    assert all(gathered.qpass_state.plan[n].gather is not None for n in downs)
    assert qpass.report(folded).summary()["lowered"] == qpass.report(gathered).summary()["lowered"] > 0
    with torch.no_grad():
        a, b = folded(input_ids=ids).logits, gathered(input_ids=ids).logits
    assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


def test_gpt2_keeps_explicit_quantize_nodes_and_reports_them():
    model = tiny_model("gpt2")
    r = Recipe("q", weights=WeightSpec(8, None), activations=ActivationSpec(8, "per_channel"), passes=[PassSpec("qsm")])
    q = qpass.compile(model, r, [_ids(seed=1)], progress=False, copy=True)
    rep = qpass.report(q)
    explicit = [row.name for row in rep.rows if any("explicit quantize node" in n for n in row.notes)]
    assert len(explicit) == 4 and all(n.endswith("c_proj") for n in explicit)
    with torch.no_grad():  # on the calibration tokens: static ranges cover them, so only rounding error remains
        ref, out = model(_ids(seed=1)).logits, q(_ids(seed=1)).logits
    assert float((out - ref).norm() / ref.norm()) < 0.05


def test_w4a8_qsm_with_split_gptq_is_close_and_lowering_ready():
    model = tiny_model("qwen3")
    r = Recipe("q", weights=WeightSpec(4, 32, rounding="gptq"), activations=ActivationSpec(8, "per_channel"),
               passes=[PassSpec("qsm", {"split": 2.0, "tile": 32})], calibration=CalibrationSpec(skip_tokens=1))
    q = qpass.compile(model, r, [_ids(4, 48, seed=1)], progress=False, copy=True)
    with torch.no_grad():
        ref, out = model(_ids()).logits, q(_ids()).logits
    assert float((out - ref).norm() / ref.norm()) < 0.3
    plan = q.qpass_state.plan
    for sp in plan.values():
        assert sp.activation.scale.eq(1).all()  # steps migrated: the producer emits integers
        assert sp.weight.qweight.dtype == torch.int8 and sp.gather is not None
        assert sp.weight.qweight.shape[1] % 32 == 0 and sp.output_error is not None
        assert "round+clamp fused into" in sp.migrated.fused_into
    assert "RoPE" in plan["model.layers.0.self_attn.q_proj"].migrated.delta


def test_report_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from qpass.reporting import plot_errors

    model = tiny_model("llama")
    r = Recipe("q", weights=WeightSpec(4, 32), activations=ActivationSpec(4, "per_channel"), passes=[PassSpec("qsm")])
    rep = qpass.report(qpass.compile(model, r, [_ids(seed=1)], progress=False, copy=True))
    assert "out mse" in rep.format()
    plot_errors(rep, str(tmp_path / "e.png"))
    assert (tmp_path / "e.png").stat().st_size > 1000


def test_smollm2_migration_is_exact():
    pytest.importorskip("gguf")
    from qpass import data, models

    try:
        model, tok = models.load("smollm2")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    calib = data.calibration_batches(tok, "emma", 2, 128)
    q = _migrate_only(model, calib)
    ids = data.austen_tokens(tok, "prideprejudice", 256)[None]
    with torch.no_grad():
        ref, out = model(ids).logits, q(ids).logits
    assert float((out - ref).norm() / ref.norm()) <= 1e-5
    # one line per block when calibrated block by block: 30 × 4/4, summed
    counts = [re.search(r"(\d+)/(\d+) input tensors migrated exactly", line) for line in qpass.report(q).log]
    counts = [(int(c[1]), int(c[2])) for c in counts if c]
    assert sum(a for a, _ in counts) == sum(b for _, b in counts) == 120


def test_guarded_activation_op_keeps_sink_tokens():
    from qpass.lowering import qdq_ops  # noqa: F401

    x = torch.randn(2, 6, 8)
    x[:, 3] *= 100.0  # a massive-activation token in the middle
    scale = torch.full((8,), 0.5)
    plain = torch.ops.qpass.fake_quant_per_channel(x, scale, None, 4)
    g = torch.ops.qpass.fake_quant_per_channel_guarded(x, scale, None, 4, 0, 8.0)
    assert torch.equal(g[:, 3], x[:, 3]) and not torch.equal(plain[:, 3], x[:, 3])
    assert torch.equal(g[:, :3], plain[:, :3]) and torch.equal(g[:, 4:], plain[:, 4:])
    k = torch.ops.qpass.fake_quant_per_channel_guarded(x, scale, None, 4, 1, 0.0)
    assert torch.equal(k[:, 0], x[:, 0]) and torch.equal(k[:, 1:], plain[:, 1:])
    one = x[:, :1]  # a one-token decode step is quantized (keep_first acts on prefills only)
    assert torch.equal(torch.ops.qpass.fake_quant_per_channel_guarded(one, scale, None, 4, 1, 0.0),
                       torch.ops.qpass.fake_quant_per_channel(one, scale, None, 4))


def _sink_llama():
    model = tiny_model("llama")
    with torch.no_grad():  # token 0 becomes a sink: after the norm all its energy sits in channel 0, far above
        model.model.embed_tokens.weight[0].zero_()  # the static range the other tokens set there
        model.model.embed_tokens.weight[0, 0] = 50.0
    return model


def test_keep_first_protects_the_sink_token():
    model = _sink_llama()
    ids = _ids(2, 32, seed=1)
    ids[:, 0] = 0
    errs = {}
    for name, extra in (("plain", {}), ("first", {"keep_first": 1})):  # outlier_guard: the op test above
        r = Recipe("q", weights=WeightSpec(8, None), activations=ActivationSpec(8, "per_channel"),
                   passes=[PassSpec("qsm", {"clip_search": False, **extra})], calibration=CalibrationSpec(skip_tokens=1))
        q = qpass.compile(model, r, [ids], progress=False, copy=True)
        with torch.no_grad():
            ref, out = model(ids).logits, q(ids).logits
        errs[name] = float((out - ref).norm() / ref.norm())
        if extra:
            sp = q.qpass_state.plan["model.layers.0.mlp.down_proj"]
            assert getattr(sp.migrated, next(iter(extra))) == next(iter(extra.values()))
    assert errs["first"] < 0.5 * errs["plain"], errs


def test_asymmetric_steps_and_joint_clip():
    model = tiny_model("llama")
    calib = [_ids(4, 48, seed=1)]
    r = Recipe("q", weights=WeightSpec(8, None), activations=ActivationSpec(4, "per_channel", symmetric=False),
               passes=[PassSpec("qsm", {"joint_clip": True})])
    q = qpass.compile(model, r, calib, progress=False, copy=True)
    sp = q.qpass_state.plan["model.layers.0.mlp.gate_proj"]
    z = sp.activation.zero
    assert z is not None and sp.activation.scale.eq(1).all() and z.min() >= 0 and z.max() <= 15
    assert not z.eq(z[0]).all()  # centred per channel, not one zero point
    with torch.no_grad():
        ref, out = model(_ids(seed=1)).logits, q(_ids(seed=1)).logits
    assert float((out - ref).norm() / ref.norm()) < 0.3


@pytest.mark.parametrize("opt,msg", [({"outlier_guard": -1.0}, "passes[0].outlier_guard"),
                                     ({"keep_first": -2}, "passes[0].keep_first"),
                                     ({"act_clip_grid": [1.5]}, "passes[0].act_clip_grid"),
                                     ({"sort": "x"}, "passes[0].sort")])
def test_qsm_option_values_validated_in_the_recipe(opt, msg):
    from qpass.recipe import RecipeError

    with pytest.raises(RecipeError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        Recipe("q", weights=WeightSpec(4, 32), activations=ActivationSpec(4, "per_channel"), passes=[PassSpec("qsm", opt)])


def test_untie_gives_o_proj_a_step_per_query_head():
    model = tiny_model("llama")  # GQA 4/2: two query heads share each V row
    calib = [_ids(4, 48, seed=1)]
    base = dict(weights=WeightSpec(8, None), activations=ActivationSpec(8, "per_channel"))
    q = qpass.compile(model, Recipe("q", **base, passes=[PassSpec("qsm", {"untie": True})]), calib, progress=False, copy=True)
    plan = q.qpass_state.plan
    r = plan["model.layers.0.self_attn.o_proj"].input_step
    assert r is not None and r.max() <= 1 + 1e-6 and r.min() < 0.999  # ratio to the group max, explicit x/r
    assert plan["model.layers.0.self_attn.q_proj"].input_step is None  # norm producers need no tie
    assert plan["model.layers.0.mlp.down_proj"].input_step is None  # up_proj's rows are not shared: no x/1 node
    with torch.no_grad():
        ref, out = model(_ids(seed=1)).logits, q(_ids(seed=1)).logits
    assert float((out - ref).norm() / ref.norm()) < 0.1
    r2 = Recipe("m", weights=None, activations=None, passes=[PassSpec("qsm", {"quantize": False, "untie": True})])
    u = qpass.compile(model, r2, calib, progress=False, copy=True)  # without rounding it stays exact
    with torch.no_grad():
        ref = model(_ids()).logits
        assert float((u(_ids()).logits - ref).norm() / ref.norm()) <= 1e-5
