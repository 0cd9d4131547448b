"""End to end on the real SmolLM2-135M-Instruct (dequantized from Q4_1) over real Austen text."""
import pytest
import torch

import qpass
from qpass import data, models

TOKENS = 1024  # two 512-token windows: enough to rank recipes, and bounded for CI


@pytest.fixture(scope="module")
def smollm2():
    torch.manual_seed(0)
    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", TOKENS)
    fp = qpass.perplexity(model, ids, seq_len=512, progress=False)
    return model, tok, ids, fp


def test_fp_perplexity_is_the_reference_protocol(smollm2):
    _, _, ids, fp = smollm2
    assert ids.numel() == TOKENS
    # measured with this protocol: 8,192 tokens give 26.83 (the published reference); the first 1,024 give this
    assert 15 < fp < 30  # 19.52 here


@pytest.mark.parametrize("recipe, max_ratio", [("w8a8", 1.05), ("w4a16", 1.8)])
def test_quantized_perplexity(smollm2, recipe, max_ratio):
    model, tok, ids, fp = smollm2
    q = qpass.compile(model, recipe, progress=False, copy=True)
    rep = qpass.report(q)
    assert rep.summary()["quantized"] == 210 and rep.summary()["graph_breaks"] == 0
    assert rep.summary()["attention_sites"] == 30
    ppl = qpass.perplexity(q, ids, seq_len=512, progress=False)
    assert fp < ppl < fp * max_ratio
    if recipe == "w4a16":
        prompt = tok("The capital of France is", return_tensors="pt").input_ids
        out = q.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert out.shape[1] == prompt.shape[1] + 4


def test_gguf_conversion_says_what_it_does_and_where(tmp_path, capfd):
    """The one-time GGUF -> HF conversion reports its steps and its cache folder, which the caller chooses."""
    model, tok = models.load("smollm2", cache_dir=tmp_path)
    err = capfd.readouterr().err
    assert f"to an HF folder in {tmp_path / 'SmolLM2-135M-Instruct'}" in err and "--cache-dir" in err
    assert "1/3" in err and "3/3" in err and "converted in" in err
    assert (tmp_path / "SmolLM2-135M-Instruct" / "config.json").is_file()
    models.load("smollm2", cache_dir=tmp_path)  # the second load reads the cache silently
    assert "converting" not in capfd.readouterr().err
