"""SmoothQuant on the migration machinery: exact before rounding, flatter activation ranges after."""
import pytest
import torch

import qpass
from qpass import ActivationSpec, Recipe, WeightSpec
from qpass.recipe import PassSpec, RecipeError

from tiny_models import tiny_model


def _ids(seed=0):
    return torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_smoothing_alone_is_exact(arch):
    model = tiny_model(arch)
    r = Recipe("s", weights=None, passes=[PassSpec("smoothquant", {"alpha": 0.5})])
    q = qpass.compile(model, r, [_ids(1)], progress=False, copy=True)
    with torch.no_grad():
        ref, out = model(_ids()).logits, q(_ids()).logits
    assert float((out - ref).norm() / ref.norm()) <= 1e-5
    assert any("smoothquant α=0.5" in line for line in qpass.report(q).log)


def test_w8a8_smooth_close_to_fp_and_alpha_validated():
    model = tiny_model("llama")
    calib = [torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1))]
    q = qpass.compile(model, "w8a8-smooth", calib, progress=False, copy=True)
    with torch.no_grad():
        ref, out = model(_ids()).logits, q(_ids()).logits
    assert float((out - ref).norm() / ref.norm()) < 0.2  # static ranges from 252 tokens of a random model
    with pytest.raises(RecipeError):
        qpass.compile(model, Recipe("s", weights=WeightSpec(), activations=ActivationSpec(8, "per_channel"),
                                    passes=[PassSpec("smoothquant", {"alpha": 2.0})]), [_ids(1)], progress=False)


def test_w8a8_smooth_decodes_on_cpu():
    """Static int8 activations at one row per step (generate's decode): 32 new tokens."""
    model = tiny_model("llama")
    calib = [torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1))]
    q = qpass.compile(model, "w8a8-smooth", calib, progress=False, copy=True)
    assert qpass.report(q).summary()["lowered"] > 0
    prompt = _ids()[:1, :8]
    out = q.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)
    assert out.shape == (1, 8 + 32)
