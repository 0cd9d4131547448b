"""Calibration text sampled from the model itself (`calibration.self_generated`, qpass/self_calibration.py): used
only when no data is passed, seeded, full-length text (no end-of-sequence token), said in the plan's log."""
import pytest
import torch

import qpass
from qpass.self_calibration import sample_calibration

from tiny_models import tiny_model

SELF = {"weights": None, "passes": [{"name": "trit_planes", "calibration": True}],
        "calibration": {"num_samples": 3, "seq_len": 12, "self_generated": True}}


def test_samples_are_seeded_full_length_and_follow_the_model():
    model = tiny_model("llama").float()
    model.config.eos_token_id = 7
    with torch.no_grad():  # a peaked next-token distribution, so that "follows the model" is measurable
        model.lm_head.weight.mul_(30)
    a = sample_calibration(model, 19, 12, progress=False)
    b = sample_calibration(model, 19, 12, progress=False)
    assert [t.shape for t in a] == [(16, 12), (3, 12)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # seeded
    ids = torch.cat(a)
    assert not (ids[:, 1:] == 7).any()  # end-of-sequence never sampled: text to the last token
    if model.config.bos_token_id is not None:
        assert (ids[:, 0] == model.config.bos_token_id).all()
    # sampled from the model's distribution: its tokens are likelier under the model than uniform random ids
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[:, :-1].float(), -1)
        sampled = logp.gather(-1, ids[:, 1:, None]).mean()
        rand = torch.randint(0, logp.shape[-1], ids[:, 1:].shape, generator=torch.Generator().manual_seed(1))
        uniform = logp.gather(-1, rand[..., None]).mean()
    assert sampled > uniform + 1.0, (float(sampled), float(uniform))


def test_no_bos_starts_from_a_seeded_random_token():
    model = tiny_model("llama").float()
    model.config.bos_token_id = None
    first = torch.cat(sample_calibration(model, 4, 5, progress=False))[:, 0]
    again = torch.cat(sample_calibration(model, 4, 5, progress=False))[:, 0]
    assert torch.equal(first, again) and len(set(first.tolist())) > 1


def test_compile_samples_only_when_no_data_is_passed():
    model = tiny_model("llama").float()
    q = qpass.compile(model, SELF, progress=False, copy=True)
    assert q.qpass_state.plan.log[0].startswith("calibration: 3 × 12 tokens sampled from the model itself")
    assert q.qpass_state.report.quantized
    data = [torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))]
    q = qpass.compile(model, SELF, data, progress=False, copy=True)
    assert not any("sampled from the model" in line for line in q.qpass_state.plan.log)
    without = {**SELF, "calibration": {"num_samples": 3, "seq_len": 12}}
    with pytest.raises(ValueError, match="needs calibration data"):
        qpass.compile(model, without, progress=False, copy=True)


def test_ternary_calib_preset_is_data_free():
    assert qpass.recipes()["ternary-calib"].calibration.self_generated
    assert not qpass.recipes()["w4a16-gptq"].calibration.self_generated  # the others still ask for data
