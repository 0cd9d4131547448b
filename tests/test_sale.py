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
        # the recipe path: `sale` pass with given τ (weights untouched), then the SDPA lowering
        recipe = Recipe("sale-test", weights=None, passes=[PassSpec("sale", {**OPTS, "taus": state.taus})])
        qm = qpass.compile(model, recipe, progress=False)
        assert qm.qpass_sale.taus == state.taus
        from qpass.lowering.sale import apply_sale
        outcomes = apply_sale(qm)
        lowered = qm(input_ids=ids, use_cache=False).logits
    assert list(outcomes.values()) == ["qpass::sale_attention"] * 2, outcomes
    torch.testing.assert_close(lowered, eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(eager, dense, atol=1e-6)  # some blocks were really skipped


def test_sale_preset():
    r = qpass.recipe.resolve("sale")
    assert r.weights is None and [p.name for p in r.passes] == ["sale"]
