"""The defaults that must hold across model families (issue 21 item 4): the data-free w4a16 preset (asymmetric
g64 round to nearest) on outlier-heavy weights and its kernel; the per-group MSE clip search (weights.clip_search);
w8a8-smooth's measured static-vs-dynamic comparison and its dynamic per-token fallback."""
import re

import pytest
import torch

import qpass
from qpass import RecipeError
from qpass.gptq import gptq_quantize
from qpass.numerics import MSE_CLIP_GRID, _grouped, compute_qparams, mse_clip_qparams, quantize_weight

from test_lowering import _ids, _lowered_twin
from tiny_models import tiny_model


def _heavy_tailed(rows=48, cols=172, seed=0):
    """Student-t weights (heavy tails, like trained LLM weights) with a few outlier input columns; 172 columns:
    groups of 64 leave a short last group of 44."""
    torch.manual_seed(seed)
    w = torch.distributions.StudentT(3.0).sample((rows, cols)) * 0.02
    w[:, torch.randperm(cols)[:4]] *= 10
    return w


def _group_err(w, q, group):
    return _grouped((q.dequantize() - w).pow(2), group, 0.0).sum(-1)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [64, 32, None])
def test_mse_clip_search_never_loses_to_the_full_range_and_wins_on_heavy_tails(symmetric, group):
    w = _heavy_tailed()
    full = quantize_weight(w, 4, group, symmetric)
    searched = quantize_weight(w, 4, group, symmetric, clip_search="mse")
    e_full, e_search = _group_err(w, full, group), _group_err(w, searched, group)
    assert bool((e_search <= e_full * (1 + 1e-6)).all())  # the grid starts at the full range: never worse per group
    assert float(e_search.sum()) < 0.97 * float(e_full.sum())  # heavy tails: clipping pays
    assert searched.zero is None if symmetric else searched.zero is not None


def test_mse_clip_search_picks_a_grid_point_per_group():
    w = _heavy_tailed(rows=8, cols=128)
    scale, _ = mse_clip_qparams(w, 4, 64, True)
    full, _ = compute_qparams(w, 4, 64, True)
    ratio = scale / full
    grid = torch.tensor(MSE_CLIP_GRID)
    assert float((ratio.unsqueeze(-1) - grid).abs().amin(-1).max()) < 1e-5
    assert float(ratio.min()) < 1.0  # some group was clipped


def test_clip_search_is_checked():
    with pytest.raises(ValueError, match="clip_search must be 'none' or 'mse'"):
        quantize_weight(torch.randn(4, 8), 4, 8, clip_search="l1")
    with pytest.raises(RecipeError, match="weights.clip_search"):
        qpass.recipe.resolve({"weights": {"clip_search": "l1"}})


def test_gptq_static_groups_take_the_mse_grid():
    w = _heavy_tailed(rows=16, cols=128)
    x = torch.randn(256, 128)
    q = gptq_quantize(w, x.T @ x, 4, 64, symmetric=False, static_groups=True, clip_search="mse")
    scale, zero = mse_clip_qparams(w, 4, 64, False)
    assert torch.equal(q.scale, scale) and torch.equal(q.zero, zero)


def _with_outlier_weights(arch):
    model = tiny_model(arch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"):
                cols = torch.randperm(m.in_features, generator=g)[:2]
                m.weight[:, cols] *= 10  # outlier input channels, as trained LLMs have
    return model


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_default_w4a16_is_lowered_everywhere_and_beats_symmetric_on_outlier_weights(arch):
    model = _with_outlier_weights(arch)
    q = qpass.compile(model, "w4a16", progress=False, copy=True, lower=False)
    lowered, outcomes, _ = _lowered_twin(q)
    ids = _ids()
    with torch.no_grad():  # the lowered twin compiles (and fills `outcomes`) on its first call
        ref, out = q(ids).logits, lowered(input_ids=ids).logits
    assert float((out - ref).norm() / ref.norm()) < 1e-3
    plan = q.qpass_state.plan
    assert plan and {outcomes[s] for s in plan} == {"w4a16"}  # every site on qpass::w4a16_linear
    assert all(sp.weight.zero is not None for sp in plan.values())
    sym = qpass.compile(model, {"name": "w4a16-sym", "weights": {"bits": 4, "group_size": 64}}, progress=False, copy=True,
                        lower=False)
    err = lambda m: sum(sp.weight_error for sp in m.qpass_state.plan.values())  # noqa: E731
    assert err(q) < 0.8 * err(sym)


def _calib():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (2, 32), generator=g) for _ in range(2)]


def test_w8a8_smooth_reports_static_against_dynamic_steps():
    recipe = qpass.recipe.resolve("w8a8-smooth")
    recipe.passes[1].options.dynamic_fallback = False  # on random weights every tensor would fall back
    q = qpass.compile(tiny_model("llama"), recipe, _calib(), progress=False, lower=False)
    lines = [s for s in q.qpass_state.plan.log if "static steps vs dynamic per-token A8" in s]
    assert lines  # one per block (block-by-block calibration), or one for the whole model
    plan = q.qpass_state.plan
    noted = [sp for sp in plan.values() if any("dynamic per-token A8 would give" in n for n in sp.notes)]
    counts = [tuple(map(int, re.search(r"at (\d+)/(\d+) sites", s).groups())) for s in lines]
    assert (sum(w for w, _ in counts), sum(n for _, n in counts)) == (len(noted), len(plan))


def test_dynamic_fallback_keeps_the_losing_tensors_dynamic_and_lowers_every_site():
    model = tiny_model("llama")
    with torch.no_grad():  # outlier channels into layer 0's norm: there static per-channel steps can win
        model.model.layers[0].input_layernorm.weight[:4] *= 20
    recipe = {"name": "w8a8-static-fallback", "weights": {"bits": 8, "group_size": None},
              "activations": {"bits": 8, "granularity": "per_channel"},
              "passes": [{"name": "qsm", "dynamic_fallback": True}]}
    q = qpass.compile(model, recipe, _calib(), progress=False, copy=True, lower=False)
    plan = q.qpass_state.plan
    dynamic = [sp for sp in plan.values() if sp.activation.granularity == "per_token"]
    static = [sp for sp in plan.values() if sp.activation.granularity == "per_channel"]
    assert dynamic and static  # both kinds, chosen by measurement
    assert all(sp.migrated is None and any("dynamic_fallback" in n for n in sp.notes) for sp in dynamic)
    assert any("dynamic_fallback" in s and "input tensors keep dynamic per-token" in s for s in plan.log)
    lowered, outcomes, _ = _lowered_twin(q)
    ids = _ids()
    with torch.no_grad():
        ref, out = q(ids).logits, lowered(input_ids=ids).logits
    assert float((out - ref).norm() / ref.norm()) < 1e-3
    assert {outcomes[s] for s in plan} <= {"w8a8", "w8a8-static"}, outcomes  # both kinds on the int8 kernel


def test_asymmetric_w4a16_exports_to_compressed_tensors_and_reads_back(tmp_path):
    """The default's zero points go into the compressed-tensors folder as the package packs them: its own
    decompression and qpass.from_compressed_tensors both give exactly the weights qpass quantized."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from safetensors.torch import load_file
    import json

    recipe = qpass.recipe.resolve("w4a16")
    recipe.weights.group_size = 32  # tiny llama's MLP is 96 wide: compressed-tensors takes whole groups only
    q = qpass.compile(_with_outlier_weights("llama"), recipe, progress=False, lower=False)
    d = qpass.save_compressed_tensors(q, tmp_path / "ct")
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert qc["config_groups"]["group_0"]["weights"]["symmetric"] is False
    scheme = QuantizationScheme.model_validate(qc["config_groups"]["group_0"])
    t = load_file(str(d / "model.safetensors"))
    back = qpass.from_compressed_tensors(d)
    plans = {sp.site: sp for sp in q.qpass_state.plan.values()}
    assert len(plans) == 14
    for site, sp in plans.items():
        local = {k.rpartition(".")[2]: v for k, v in t.items() if k.rpartition(".")[0] == site}
        theirs = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        torch.testing.assert_close(theirs, sp.weight.dequantize(), rtol=0, atol=0)
        torch.testing.assert_close(back.qpass_state.plan[site].weight.dequantize(), sp.weight.dequantize(),
                                   rtol=0, atol=0)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, q(ids).logits, rtol=0, atol=1e-5)
