"""SALE: τ calibration, the HF attention function, and the SDPA → qpass::sale_attention lowering (CPU)."""
import torch
import transformers as tf

import qpass
from qpass.passes.sale import SaleOptions, SaleState, calibrate_taus, choose_taus, tau_ladder, use_sale
from qpass.recipe import PassSpec, Recipe

OPTS = dict(block_m=64, block_n=64, sink=64, window=64, min_seq_len=0)


def _model():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


def test_ladder_and_choice():
    o = SaleOptions()
    lad = tau_ladder(o)
    assert lad[0] == 0.008 and lad[-1] > o.tau_dense and lad[-1] / 2 <= o.tau_dense
    l1 = torch.tensor([[0.5, 0.3, 0.1], [0.9, 0.8, 0.7], [0.1, 0.0, 0.0]])
    assert choose_taus(l1, [0.008, 0.004, 0.002], 0.4, 1e-4) == [0.004, 0.0, 0.008]


def test_calibrate_lower_and_compile():
    model = _model()
    ids = torch.randint(0, 256, (1, 320), generator=torch.Generator().manual_seed(1))
    opts = SaleOptions(**OPTS, tau_init=0.05, theta=0.05)
    state = calibrate_taus(model, ids, opts)
    assert set(state.taus) == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    assert all(len(t) == 4 for t in state.taus.values())
    state.taus = {n: [0.05, 0.02, 0.0, 0.01] for n in state.taus}  # one dense head
    with torch.no_grad():
        dense = model(input_ids=ids, use_cache=False).logits
        with use_sale(model, "sale", opts, state.taus) as ctx:
            eager = model(input_ids=ids, use_cache=False).logits
        assert sum(v["kept"] for v in ctx.stats.values()) < sum(v["causal"] for v in ctx.stats.values())
        # the recipe path: `sale` pass with given τ (weights untouched); qpass.compile lowers SDPA itself
        recipe = Recipe("sale-test", weights=None, passes=[PassSpec("sale", {**OPTS, "taus": state.taus})])
        qm = qpass.compile(model, recipe, progress=False, copy=True)
        assert {m: p.taus for m, p in qm.qpass_state.plan.attention.items()} == state.taus
        lowered = qm(input_ids=ids, use_cache=False).logits
    rep = qpass.report(qm)
    assert rep.attention_lowering == {n: "sale" for n in state.taus}, rep.attention_lowering
    assert rep.summary()["attention_lowered"] == 2 and "attention lowered: 2/2 SDPA sites (sale)" in rep.format()
    assert qm.qpass_state.lowering == rep.attention_lowering  # one outcomes dict (no quantized linears here)
    torch.testing.assert_close(lowered, eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(eager, dense, atol=1e-6)  # some blocks were really skipped


def _graph_nodes(qm):
    """The call_function nodes of the graphs qpass compiled for `qm` (re-run the transform on a fresh capture)."""
    from qpass.capture import compile_forward

    nodes = []

    def record(cap):
        qm.qpass_state.transform(cap)
        nodes.extend(n for n in cap.graph.nodes if n.op == "call_function")

    fwd, _ = compile_forward(qm, record)
    with torch.no_grad():
        fwd(input_ids=torch.zeros(1, 8, dtype=torch.long), use_cache=False)
    return nodes


def test_sale_composes_with_a_weight_recipe_and_pool():
    """w4a16 weights + SALE with the pooled estimate: one transform lowers the linears and the SDPA nodes."""
    model = _model()
    taus = {f"model.layers.{i}.self_attn": [0.05, 0.02, 0.1, 0.01] for i in range(2)}
    recipe = Recipe("w4a16-sale", weights=qpass.WeightSpec(bits=4, group_size=64),
                    passes=[PassSpec("sale", {**OPTS, "taus": taus, "pool": 16})])
    qm = qpass.compile(model, recipe, progress=False, copy=True)
    rep = qpass.report(qm)
    assert set(rep.attention_lowering.values()) == {"sale"} and rep.summary()["lowered"] == rep.summary()["quantized"]
    ids = torch.randint(0, 256, (1, 300), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = qm(input_ids=ids, use_cache=False).logits
    assert torch.isfinite(out).all()
    ops = [str(n.target) for n in _graph_nodes(qm)]
    assert "qpass.sale_attention.default" in ops and "qpass.w4a16_linear.default" in ops


def test_sale_options_are_validated():
    import pytest

    from qpass.recipe import RecipeError

    with pytest.raises(RecipeError, match="pool"):  # through qpass.compile: the pass checks its options
        qpass.compile(_model(), Recipe("bad", weights=None, passes=[PassSpec("sale", {**OPTS, "pool": 3, "taus": {}})]),
                      progress=False)
    for bad, key in (({"pool": 128}, "pool"), ({"pool": 0}, "pool"), ({"block_m": 48}, "block_m"),
                     ({"tau_init": 1e-5}, "tau_init")):
        with pytest.raises(RecipeError, match=key):
            SaleOptions(**{**OPTS, **bad})
    assert SaleOptions(**OPTS, pool=64).pool == 64
    # lower=False keeps dense SDPA (and says so)
    taus = {f"model.layers.{i}.self_attn": [0.05] * 4 for i in range(2)}
    off = qpass.compile(_model(), Recipe("sale", weights=None, passes=[PassSpec("sale", {**OPTS, "taus": taus})]),
                        progress=False, lower=False)
    rep = qpass.report(off)
    assert rep.attention_lowering == {} and any("lower=False keeps dense SDPA" in x for x in rep.log)


def test_sale_preset():
    r = qpass.recipe.resolve("sale")
    assert r.weights is None and [p.name for p in r.passes] == ["sale"]


def test_tau_calibration_uses_the_callers_calibration_data():
    """qpass.compile(model, sale_recipe, calib): τ come from the caller's tokens (rows joined) when they are long
    enough — the same τ as calibrating on them directly; too short, and the report says what was used instead."""
    model = _model()
    calib = [torch.randint(0, 256, (2, 200), generator=torch.Generator().manual_seed(5))]
    opts = {**OPTS, "tau_init": 0.05, "theta": 0.05, "calib_tokens": 320}
    qm = qpass.compile(model, Recipe("sale-cal", weights=None, passes=[PassSpec("sale", opts)]), calib, progress=False, copy=True)
    expect = calibrate_taus(model, calib[0].reshape(-1)[:320][None], SaleOptions(**opts))
    assert {m: p.taus for m, p in qm.qpass_state.plan.attention.items()} == expect.taus
    assert any("first 320 tokens of the calibration data" in line for line in qm.qpass_state.report.log)
    short = qpass.compile(model, Recipe("sale-cal", weights=None, passes=[PassSpec("sale", {**opts, "calib_tokens": 512})]),
                          calib, progress=False, copy=True)
    assert any("400 tokens < calib_tokens 512" in line for line in short.qpass_state.report.log)
