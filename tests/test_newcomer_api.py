"""What a newcomer hits first: a dict recipe, the backend without torch.no_grad(), saving the tokenizer beside
the model, a group size no kernel takes, and qpass.compile in a fresh process."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import qpass
from qpass import LoadError, Recipe, RecipeError

from tiny_models import tiny_model

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


def _ids(n=2, t=16, seed=0, vocab=256):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _qpass_warnings(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("qpass:")]


# ------------------------------------------------------------------------------------------------ 1. dict recipes
def test_compile_accepts_a_dict_recipe_validated_like_a_file(tmp_path):
    d = {"weights": {"bits": 4, "group_size": 32}}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q = qpass.compile(tiny_model("llama"), d, progress=False)
    assert d == {"weights": {"bits": 4, "group_size": 32}}  # the caller's dict is not touched
    s = qpass.report(q).summary()
    assert s["quantized"] == 14 and s["lowered"] == 14 and not s["not_lowered"]
    assert {r.scheme for r in qpass.report(q).quantized} == {"w4 g32"}
    assert not _qpass_warnings(record)  # a supported group size: no group-size warning
    (tmp_path / "r.json").write_text(json.dumps(d))
    assert qpass.recipe.resolve(d).to_dict() == Recipe.from_file(tmp_path / "r.json").to_dict()
    # errors name the key path, as for YAML/JSON files (and fail before any work)
    with pytest.raises(RecipeError, match=r"weights\.group_sze: unknown key; allowed: bits, group_size"):
        qpass.compile(tiny_model("llama"), {"weights": {"bits": 4, "group_sze": 32}})
    with pytest.raises(RecipeError, match=r"weights\.bits: 5 is not supported"):
        qpass.compile(tiny_model("llama"), {"weights": {"bits": 5}})


# ------------------------------------------------------------------------------- 2. backend under grad mode
def test_backend_runs_inference_under_grad_mode():
    """No torch.no_grad(): the backend compiles the inference graph and runs it without grad — same logits as
    under no_grad, no autograd history, and the caller's grad mode is left on."""
    torch._dynamo.reset()
    model = tiny_model("llama")
    compiled = torch.compile(model, backend="qpass", options={"recipe": "w4a16", "backend": "aot_eager"}, fullgraph=True)
    ids = _ids()
    assert torch.is_grad_enabled()
    out = compiled(ids).logits
    assert torch.is_grad_enabled() and not out.requires_grad
    with torch.no_grad():
        expect = compiled(ids).logits  # a graph of its own (Dynamo guards on grad mode)
    assert float((out - expect).norm() / expect.norm()) < 1e-6


class _NoGradRegion(torch.nn.Module):
    """A forward with a `torch.no_grad()` block: Dynamo records it as _set_grad_enabled(False) / (True) nodes,
    and the restore must not turn grad mode on in the middle of the qpass graph."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

    def forward(self, x):
        with torch.no_grad():
            x = x * 2
        return self.b(torch.relu(self.a(x)))


def test_backend_under_grad_mode_with_a_no_grad_region_in_the_model():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = _NoGradRegion(), torch.randn(3, 64)
    recipe = {"weights": {"bits": 4, "group_size": 32}, "ignore": []}
    compiled = torch.compile(model, backend="qpass", options={"recipe": recipe, "backend": "aot_eager"})
    out = compiled(x)
    with torch.no_grad():
        expect = compiled(x)
    assert not out.requires_grad and torch.equal(out, expect)


# --------------------------------------------------------------------------- 3. tokenizer + generation config
@pytest.mark.skipif(not STORIES.is_dir(), reason="stories260K not present")
def test_save_writes_tokenizer_and_generation_config_hashed_and_loadable(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    q = qpass.compile(model, "w4a16", progress=False, copy=True)
    d = qpass.save(q, tmp_path / "stories-w4a16", tokenizer=tok)

    text = "Once upon a time there was a dog"
    tok2 = AutoTokenizer.from_pretrained(d)
    assert tok2(text).input_ids == tok(text).input_ids and tok2.eos_token == tok.eos_token
    gen = GenerationConfig.from_pretrained(d)
    assert gen.eos_token_id == model.generation_config.eos_token_id == 2
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest["files"]) == {"recipe.json", "weights.safetensors", "program.pt2"}
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert set(manifest["extra_files"]) == on_disk - set(manifest["files"]) - {"manifest.json"}
    assert {"generation_config.json", "tokenizer_config.json"} <= set(manifest["extra_files"])

    m = qpass.load(d)  # loading still works, and checks the new files
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        assert float((m(ids) - q(ids).logits).abs().max()) < 1e-4
    (d / "tokenizer_config.json").write_text((d / "tokenizer_config.json").read_text().replace("</s>", "<x>"))
    with pytest.raises(LoadError, match="tokenizer_config.json"):
        qpass.load(d)

    # w8a8: stories260K's FFN width 172 takes no whole groups of 64, which compressed-tensors requires
    qc = qpass.compile(model, "w8a8", progress=False, copy=True)
    ct = qpass.save_compressed_tensors(qc, tmp_path / "stories-ct", tokenizer=tok)
    assert AutoTokenizer.from_pretrained(ct)(text).input_ids == tok(text).input_ids
    assert GenerationConfig.from_pretrained(ct).eos_token_id == 2
    assert "quantization_config" in json.loads((ct / "config.json").read_text())
    with pytest.raises(TypeError, match="tokenizer= must be a Hugging Face tokenizer"):
        qpass.save(q, tmp_path / "bad", tokenizer="gpt2")
    assert not (tmp_path / "bad").exists()


def test_manifest_extra_files_outside_the_directory_are_refused(tmp_path):
    from qpass.export import _check

    q = qpass.compile(tiny_model("llama"), "w4a16", progress=False, lower=False)
    d = qpass.save(q, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest["extra_files"]) == {"generation_config.json"}
    _check(d)
    (tmp_path / "outside.json").write_text("{}")
    manifest["extra_files"]["../outside.json"] = {"sha256": "0" * 64, "bytes": 2}
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match="not a file inside"):
        qpass.load(d)


# ------------------------------------------------------------------------------ 4. unsupported group sizes
def test_unsupported_group_size_warns_once_and_the_report_says_why():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q = qpass.compile(tiny_model("llama"), {"weights": {"bits": 4, "group_size": 7}}, progress=False)
    messages = _qpass_warnings(record)
    assert len(messages) == 1, messages  # one per compile, not one per site
    msg = messages[0]
    assert "14 of 14 quantized linear sites not lowered" in msg and "group size 7" in msg
    assert "power of two ≥ 16, a multiple of 256, or the whole input row" in msg
    assert "model.layers.0.self_attn.q_proj" in msg and "fake-quant reference path" in msg

    report = qpass.report(q)
    d = report.to_dict()
    assert len(d["summary"]["not_lowered"]) == 14 and d["summary"]["lowered"] == 0
    for row in d["rows"]:
        if row["status"] == "quantized":
            assert row["lowering"].startswith("unmatched: w4a16: group size 7 at K=")
            assert "power of two" in row["lowering"]
    text = report.format()
    assert text.count("NOT LOWERED") == 14 and "lowered to qpass.kernels: 0/14" in text
    assert "NOT LOWERED model.layers.1.mlp.down_proj (w4 g7): w4a16: group size 7 at K=96" in text


# ----------------------------------------------------------------------------- qpass.compile in a new process
def test_lowered_compile_in_a_fresh_process():
    """The kernel ops register themselves when the lowering emits them (kernels/ has no __init__ that would
    import them): a fresh `qpass.compile(model, "w4a16")` once failed with `no attribute 'w4a16_linear'`
    unless some other module had imported qpass.kernels.ops first (as the full test suite does)."""
    code = (
        "import sys, torch, qpass; sys.path.insert(0, sys.argv[1]); from tiny_models import tiny_model\n"
        "q = qpass.compile(tiny_model('llama'), 'w4a16', progress=False)\n"
        "assert qpass.report(q).summary()['lowered'] == 14, qpass.report(q)\n"
        "c = torch.compile(tiny_model('llama'), backend='qpass', options={'recipe': 'w4a16', 'backend': 'eager'})\n"
        "with torch.no_grad(): c(torch.zeros(1, 4, dtype=torch.long))\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
