"""The trit_planes pass and `ternary` preset end to end on a tiny model (the decomposition itself: test_tritplane.py)."""
import torch

import qpass
from qpass import PassSpec, Recipe
from qpass.tritplane import reconstruct

from tiny_models import tiny_model


def test_ternary_preset_replaces_every_linear_but_lm_head():
    model = tiny_model("llama")
    q = qpass.compile(model, "ternary", progress=False, copy=True)
    rep = qpass.report(q)
    rows = {r.name: r for r in rep.rows}
    assert rep.summary()["quantized"] == len(rows) - 1 and rows["lm_head"].status != "quantized"
    down = rows["model.layers.0.mlp.down_proj"]
    assert down.scheme.startswith("ternary 2-plane g64") and "iterations per block" in down.notes[0]
    assert any(entry.startswith("trit_planes:") for entry in rep.log)
    tp = q.qpass_state.plan["model.layers.0.mlp.down_proj"].weight
    assert set(torch.unique(tp.t1).tolist()) <= {-1, 0, 1} and set(torch.unique(tp.t2).tolist()) <= {-1, 0, 1}
    w = model.get_parameter("model.layers.0.mlp.down_proj.weight").detach()
    assert abs(down.weight_error - float((reconstruct(tp) - w).norm() / w.norm())) < 1e-6
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        ref, out = model(ids).logits, q(ids).logits
    assert 0 < float((out - ref).norm() / ref.norm()) < 0.5


def test_group_size_option_and_bad_option():
    model = tiny_model("qwen2")
    q = qpass.compile(model, Recipe(weights=None, passes=[PassSpec("trit_planes", {"group_size": 32})]), progress=False, copy=True)
    assert q.qpass_state.plan["model.layers.1.mlp.up_proj"].weight.alpha1.shape == (96, 2)
    try:
        Recipe.from_dict({"weights": None, "passes": [{"name": "trit_planes", "group_sise": 32}]})
    except qpass.RecipeError as e:
        assert "passes[0].group_sise: unknown key" in str(e)
    else:
        raise AssertionError("a misspelled option must fail validation")
