"""Trit planes fitted with calibration data (qpass/trit_gptq.py, preset `ternary-calib`): lower activation-weighted
error than the data-free fit where inputs have outlier channels, same format, lowered = fake-quant."""
from pathlib import Path

import pytest
import torch

import qpass
from qpass.lowering.lower import quantize_transform
from qpass.capture import compile_forward
from qpass.trit_gptq import fit_with_hessian, hessian_error, refit_scales
from qpass.tritplane import decompose, reconstruct

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


def _outlier_inputs(c, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    x[:, torch.randperm(c, generator=g)[: max(1, c // 32)]] *= 25  # a few outlier channels, as in LLM inputs
    return x.T @ x / n


@pytest.mark.parametrize("out_f, in_f, group", [(40, 200, 64), (1, 96, 32), (33, 64, 64)])
def test_data_aware_fit_lowers_the_activation_weighted_error(out_f, in_f, group):
    """Random non-zero weights, tail groups (200 = 3·64 + 8), a single row: the calibrated fit beats the data-free
    one on tr(ΔW H ΔWᵀ) by a clear margin, and keeps the format (trits in {-1, 0, 1}, scales per (row, group))."""
    H = _outlier_inputs(in_f)
    w = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(1))
    free = hessian_error(w, reconstruct(decompose(w, group)), H)
    tp = fit_with_hessian(w, H, group)
    calib = hessian_error(w, reconstruct(tp), H)
    assert calib < 0.7 * free, (calib, free)
    assert abs(tp.stats["output_error"] - calib) < 1e-9
    assert set(torch.unique(tp.t1).tolist()) <= {-1, 0, 1} and set(torch.unique(tp.t2).tolist()) <= {-1, 0, 1}
    assert tp.alpha1.shape == (out_f, -(-in_f // group)) and torch.equal(tp.alpha1, tp.alpha1.half().float())


def test_scale_refit_is_the_exact_minimum_for_fixed_trits():
    """Perturbing the refit scales in any direction raises the weighted error (it solves the normal equations)."""
    H = _outlier_inputs(72, seed=3)
    w = torch.randn(5, 72, generator=torch.Generator().manual_seed(4))
    tp = decompose(w, 32)
    a1, a2 = refit_scales(w, H, tp.t1, tp.t2, 32, ridge=0.0)
    tp.alpha1, tp.alpha2 = a1, a2
    best = hessian_error(w, reconstruct(tp), H)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        tp.alpha1 = a1 + 1e-3 * torch.randn(a1.shape, generator=g)
        assert hessian_error(w, reconstruct(tp), H) > best


def test_bad_hessian_is_refused_clearly():
    with pytest.raises(ValueError, match="hessian"):
        fit_with_hessian(torch.randn(4, 64), torch.eye(32), 32)


def test_recipe_needs_data_only_when_asked():
    assert not qpass.recipes()["ternary"].needs_calibration
    assert qpass.recipes()["ternary-calib"].needs_calibration
    with pytest.raises(qpass.RecipeError, match="method"):
        qpass.Recipe.from_dict({"weights": None, "passes": [{"name": "trit_planes", "calibration": True,
                                                             "method": "paper"}]})


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_stories260k_calibrated_ternary_lowers_and_matches_fake_quant():
    """The real fp32 stories260K (FFN 172: a tail group): every linear fitted with data, lowered to
    qpass::ternary_linear, lowered output = fake-quant output (closer than the data-free fit: the unit tests above)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(1, 512, (2, 128), generator=g) for _ in range(2)]
    q = qpass.compile(model, "ternary-calib", calib, progress=False, lower=False)
    plan = q.qpass_state.plan
    assert len(plan) == 35 and all("GPTQ-style" in sp.notes[0] for sp in plan.values())
    transform = quantize_transform(plan, lower=True)
    lowered, _ = compile_forward(q, transform)
    ids = torch.randint(1, 512, (2, 40), generator=g)
    with torch.no_grad():
        fq, low = q(ids).logits, lowered(input_ids=ids).logits
    assert {transform.outcomes[s] for s in plan} == {"ternary"}  # known once the lowered graph was captured
    assert float((low - fq).norm() / fq.norm()) < 1e-4
