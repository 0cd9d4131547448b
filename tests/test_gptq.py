"""GPTQ: lower output error than round-to-nearest under the layer's Hessian; groups, act-order, recipe use."""
import pytest
import torch

import qpass
from qpass import Recipe, WeightSpec
from qpass.gptq import GPTQError, gptq_quantize, layer_error
from qpass.numerics import quantize_weight

from tiny_models import tiny_model


def _layer(seed=0, o=48, c=96, t=512):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, c, generator=g) @ torch.randn(c, c, generator=g) * 0.3 + torch.randn(c, generator=g)
    return torch.randn(o, c, generator=g), x.T @ x / t


@pytest.mark.parametrize("group,act_order", [(None, False), (32, False), (32, True), (40, False)])
def test_gptq_beats_rtn_on_output_error(group, act_order):
    w, h = _layer()
    q = gptq_quantize(w, h, 4, group, act_order=act_order)
    rtn = quantize_weight(w, 4, group)
    assert q.qweight.shape == w.shape and q.qweight.dtype == torch.int8 and q.qweight.abs().max() <= 8
    assert layer_error(w, q.dequantize(), h) < 0.7 * layer_error(w, rtn.dequantize(), h)


def test_gptq_with_identity_hessian_is_rtn():
    w, _ = _layer()
    q = gptq_quantize(w, torch.eye(w.shape[1]), 4, 32, damp=0.0)
    assert torch.equal(q.dequantize(), quantize_weight(w, 4, 32).dequantize())


def test_gptq_recipe_on_a_tiny_model():
    model = tiny_model("llama")
    ids = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1))
    r = Recipe("g", weights=WeightSpec(4, 32, rounding="gptq"))
    assert r.needs_calibration
    q = qpass.compile(model, r, [ids], progress=False, copy=True)
    rows = qpass.report(q).quantized
    assert all(row.output_error is not None and row.output_error < 0.1 for row in rows)


@pytest.mark.parametrize("symmetric", [True, False])
def test_static_groups_keep_the_rtn_grid_and_beat_rtn(symmetric):
    w, h = _layer(seed=2)
    rtn = quantize_weight(w, 4, 32, symmetric)
    q = gptq_quantize(w, h, 4, 32, symmetric, static_groups=True)
    assert torch.equal(q.scale, rtn.scale) and (symmetric or torch.equal(q.zero, rtn.zero))
    assert layer_error(w, q.dequantize(), h) < 0.8 * layer_error(w, rtn.dequantize(), h)
    # on a weight already on the RTN grid (a model dequantized from a 4-bit format), nothing moves
    on_grid = rtn.dequantize()
    assert torch.allclose(gptq_quantize(on_grid, h, 4, 32, symmetric, static_groups=True).dequantize(), on_grid, atol=1e-6)


def test_gptq_with_integer_group_steps_keeps_the_integer_grid():
    """integer_steps: the static grid's steps are integer multiples of a row step, and GPTQ's codes stay on it; without
    static groups the row step could not be set up front, so it is refused."""
    from qpass import numerics

    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 192, generator=g)
    x = torch.randn(256, 192, generator=g)
    h = x.T @ x
    q = gptq_quantize(w, h, 4, 64, symmetric=False, static_groups=True, integer_steps=True)
    u = q.scale / (q.scale.amax(-1, keepdim=True) / numerics.integer_step_limit(4, False))
    assert torch.allclose(u, u.round(), atol=1e-5) and u.min() >= 1 and u.max() <= 8
    assert float(((q.dequantize() - w) @ x.T).norm() / (w @ x.T).norm()) < 0.2
    with pytest.raises(GPTQError, match="integer group steps need static groups"):
        gptq_quantize(w, h, 4, 64, integer_steps=True)
