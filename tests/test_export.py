"""qpass.save / qpass.load (fresh process, integrity checks) and the compressed-tensors layout."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import qpass
from qpass.export import FORMAT_VERSION, LoadError

from tiny_models import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    q = qpass.compile(tiny_model("llama"), "w8a8", progress=False)
    d = tmp_path_factory.mktemp("save") / "tiny-w8a8"
    qpass.save(q, d)
    ids = torch.randint(0, 256, (3, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = q(ids).logits
    return q, d, ids, ref


def _copy(d, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(d, dst)
    return dst


def _reload_in_fresh_process(d, ids, op, tmp_path):
    """qpass.load(d) in a new interpreter: asserts the program calls `op`, returns its logits for `ids`."""
    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    code = (
        "import sys, torch, qpass; from safetensors.torch import load_file, save_file\n"
        "m = qpass.load(sys.argv[1]); ids = load_file(sys.argv[2])['ids']\n"
        "ops = {str(n.target) for n in m.module.graph.nodes if n.op == 'call_function'}\n"
        "assert sys.argv[4] in ops, ops\n"
        "with torch.no_grad(): save_file({'out': m(ids)}, sys.argv[3])\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    subprocess.run([sys.executable, "-c", code, str(d), str(tmp_path / "ids.safetensors"), str(tmp_path / "out.safetensors"),
                    op], check=True, env=env, timeout=600)
    return load_file(str(tmp_path / "out.safetensors"))["out"]


def test_fresh_process_load_matches(saved, tmp_path):
    _, d, ids, ref = saved
    assert sorted(os.listdir(d)) == ["generation_config.json", "manifest.json", "program.pt2", "recipe.json",
                                     "weights.safetensors"]  # generation_config.json: the model's (tiny_model has one)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["torch_version"] == torch.__version__
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    out = _reload_in_fresh_process(d, ids, "qpass.int8_linear.default", tmp_path)
    assert float((out - ref).abs().max()) <= 1e-4


def test_weights_are_stored_once(saved):
    """program.pt2 keeps the graph; its tensors are one-element hollow views, weights.safetensors has the data."""
    import zipfile

    _, d, _, _ = saved
    with zipfile.ZipFile(d / "program.pt2") as z:
        data = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith(".json")]
    assert data and max(i.file_size for i in data) <= 8, sorted((i.file_size, i.filename) for i in data)[-3:]
    assert sum(v.numel() for v in load_file(str(d / "weights.safetensors")).values()) > 10_000


def test_loaded_model_generates_like_the_compiled_one(saved):
    q, d, ids, _ = saved
    m = qpass.load(d)
    prompt = ids[:2, :7]
    out = m.generate(prompt, max_new_tokens=5)
    with torch.no_grad():
        expect = q.generate(prompt, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape == (2, 12) and torch.equal(out, expect)
    first = int(out[0, 7])
    stopped = m.generate(prompt[:1], max_new_tokens=5, eos_token_id=first)
    assert stopped.shape == (1, 8) and int(stopped[0, -1]) == first


def test_flipped_byte_truncation_and_version_are_refused(saved, tmp_path):
    _, d, _, _ = saved
    bad = _copy(d, tmp_path)
    w = bad / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(LoadError, match="sha256"):
        qpass.load(bad)
    w.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(LoadError, match="truncated"):
        qpass.load(bad)
    shutil.rmtree(bad)
    bad = _copy(d, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LoadError, match="format version"):
        qpass.load(bad)


def test_pickled_payload_is_refused_even_with_matching_hashes(saved, tmp_path):
    """A rewritten archive with a pickle in it (and a manifest re-hashed to match) is still not unpickled."""
    import hashlib
    import zipfile

    _, d, _, _ = saved
    bad = _copy(d, tmp_path)
    pt2 = bad / "program.pt2"
    with zipfile.ZipFile(d / "program.pt2") as src, zipfile.ZipFile(pt2, "w") as dst:
        for item in src.infolist():
            payload = src.read(item.filename)
            if "sample_inputs" in item.filename:
                payload = b"\x80\x02cos\nsystem\n."  # a pickle: must never reach pickle.load
            dst.writestr(item, payload)
    m = json.loads((bad / "manifest.json").read_text())
    m["files"]["program.pt2"] = {"sha256": hashlib.sha256(pt2.read_bytes()).hexdigest(), "bytes": pt2.stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LoadError, match="unpickle"):
        qpass.load(bad)


def test_save_is_atomic(saved, tmp_path, monkeypatch):
    q, d, _, _ = saved
    with pytest.raises(FileExistsError):
        qpass.save(q, d)
    target = tmp_path / "new"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        qpass.save(q, target)
    assert not target.exists() and not list(tmp_path.iterdir())  # no partial directory, no temp left


# group 32: the layout takes whole groups only, and the tiny llama's FFN is 96 wide
W4A16_G32 = {"name": "w4a16-g32", "weights": {"bits": 4, "group_size": 32}}


@pytest.mark.parametrize("recipe, fmt", [(W4A16_G32, "pack-quantized"), ("w8a8", "int-quantized")])
def test_compressed_tensors_layout_reads_back(recipe, fmt, tmp_path):
    from compressed_tensors.compressors import unpack_from_int32

    q = qpass.compile(tiny_model("llama"), recipe, progress=False, lower=False)
    qpass.save_compressed_tensors(q, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt and qc["ignore"] == ["lm_head"]
    wcfg = qc["config_groups"]["group_0"]["weights"]
    t = load_file(str(tmp_path / "model.safetensors"))
    plan = q.qpass_state.plan["model.layers.0.mlp.down_proj"]
    prefix = "model.layers.0.mlp.down_proj"
    assert f"{prefix}.weight_scale" in t and t[f"{prefix}.weight_scale"].dtype == torch.float32
    if fmt == "pack-quantized":
        assert wcfg == {**wcfg, "num_bits": 4, "strategy": "group", "group_size": 32, "symmetric": True, "type": "int"}
        packed = t[f"{prefix}.weight_packed"]
        assert packed.dtype == torch.int32 and packed.shape == (64, 96 // 8)
        assert t[f"{prefix}.weight_shape"].tolist() == [64, 96] and f"{prefix}.weight" not in t
        codes = unpack_from_int32(packed, 4, torch.Size([64, 96]))
        # offset encoding: nibble j of word w holds q[8w + j] + 8
        assert int(packed[0, 0]) & 0xF == int(plan.weight.qweight[0, 0]) + 8
    else:
        assert qc["config_groups"]["group_0"]["input_activations"]["strategy"] == "token"
        assert wcfg["strategy"] == "channel" and wcfg["num_bits"] == 8
        codes = t[f"{prefix}.weight"]
        assert codes.dtype == torch.int8
    assert torch.equal(codes, plan.weight.qweight)
    scale = t[f"{prefix}.weight_scale"]
    assert scale.shape == plan.weight.scale.shape
    group = wcfg["group_size"] or 96
    w = codes.float() * scale.repeat_interleave(group, dim=1)[:, :96]
    torch.testing.assert_close(w, plan.weight.dequantize())
    assert torch.equal(t["lm_head.weight"], q.lm_head.weight.detach()) or "lm_head.weight" in t


@pytest.mark.parametrize("recipe", [W4A16_G32, {"name": "w4a16-per-row", "weights": {"bits": 4, "group_size": None}},
                                    "w8a8"])
def test_compressed_tensors_export_loads_in_transformers(recipe, tmp_path):
    """Plain transformers (through the compressed-tensors package) loads the folder: its linears hold exactly
    the weights qpass quantized, so W4A16 (full-precision activations on both sides) gives qpass's logits."""
    import transformers as tf
    from compressed_tensors.compressors import unpack_from_int32

    q = qpass.compile(tiny_model("llama"), recipe, progress=False, lower=False)
    qpass.save_compressed_tensors(q, tmp_path / "ct")
    m = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32).eval()
    plans = [plan for plan in q.qpass_state.plan.values() if plan.weight is not None]
    assert len(plans) == 14
    for plan in plans:  # transformers keeps the layers compressed (decompressing at each forward) or decompresses
        mod = m.get_submodule(plan.weight_fqn.removesuffix(".weight"))
        packed = getattr(mod, "weight_packed", None)
        shape = None if packed is None else torch.Size(mod.weight_shape.tolist())
        stored = mod.weight.detach() if packed is None else unpack_from_int32(packed, 4, shape)
        if stored.dtype == torch.int8:  # the very codes and scales
            assert torch.equal(stored, plan.weight.qweight) and torch.equal(mod.weight_scale, plan.weight.scale)
        else:
            assert torch.equal(stored, plan.weight.dequantize())
    ids = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = q(ids).logits, m(ids).logits
    if recipe == "w8a8":  # transformers runs the int8 weights with full-precision activations
        torch.testing.assert_close(theirs, ours, rtol=0, atol=0.05)
    else:
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_compressed_tensors_export_without_the_package_says_what_to_install(monkeypatch, tmp_path):
    q = qpass.compile(tiny_model("llama"), "w8a8", progress=False, lower=False)
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # an import of it now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'qpass\[compressed\]'"):
        qpass.save_compressed_tensors(q, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()


def test_sale_model_saves_with_sale_attention_and_reloads(tmp_path):
    """A SALE recipe (τ given, 16x16 blocks for the tiny model): the saved program holds the lowered
    qpass::sale_attention (the plan's attention table travels with qpass_state.plan) and reloads to the same
    output in a fresh process."""
    from qpass import PassSpec, Recipe

    taus = {f"model.layers.{i}.self_attn": [0.05, 0.2, 0.0, 0.1] for i in range(2)}
    opts = dict(block_m=16, block_n=16, sink=16, window=16, min_seq_len=0, taus=taus, pool=4)
    q = qpass.compile(tiny_model("llama"), Recipe("sale-tiny", weights=None, passes=[PassSpec("sale", opts)]),
                      progress=False)
    assert set(qpass.report(q).attention_lowering.values()) == {"sale"}
    d = tmp_path / "tiny-sale"
    qpass.save(q, d)
    ids = torch.randint(0, 256, (2, 150), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = q(ids).logits
        assert not torch.allclose(ref, tiny_model("llama")(ids).logits, atol=1e-3)  # weights untouched: SALE did this
    out = _reload_in_fresh_process(d, ids, "qpass.sale_attention.default", tmp_path)
    assert float((out - ref).abs().max()) <= 1e-4


def test_compressed_tensors_refuses_partial_groups(tmp_path):
    """compressed-tensors (and so transformers and vLLM) take whole groups only: a layer whose width is not a
    multiple of the group size is refused at export, not left to fail when someone loads the folder."""
    import transformers as tf

    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    q = qpass.compile(tf.AutoModelForCausalLM.from_config(cfg).eval(), "w4a16", progress=False, lower=False)
    with pytest.raises(ValueError, match="not a multiple of its group size 64"):
        qpass.save_compressed_tensors(q, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()


def test_compressed_tensors_export_writes_tied_weights_once(tmp_path):
    """A model whose lm_head is tied to its embedding: the export stores that tensor once (as save_pretrained does)
    and transformers ties it again on load, with the same logits as qpass's."""
    import copy

    import transformers as tf
    from safetensors import safe_open

    from tiny_models import CONFIGS

    cfg = copy.deepcopy(CONFIGS["llama"]())
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    q = qpass.compile(model, W4A16_G32, progress=False, copy=True, lower=False)
    qpass.save_compressed_tensors(q, tmp_path / "ct")
    with safe_open(str(tmp_path / "ct" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    m = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32).eval()
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, q(ids).logits, rtol=0, atol=1e-5)


def test_asymmetric_w4a8_saves_with_its_weight_zeros_and_reloads(tmp_path):
    """w4a8-qsm with asymmetric weights: the saved program holds qpass::w4a8_linear with the zero points as a
    packed constant beside the steps, and reloads in a fresh process to the same logits; the compressed-tensors
    export refuses it with the reason."""
    import dataclasses

    r = qpass.recipes()["w4a8-qsm"]
    r = dataclasses.replace(r, name="w4a8-qsm-asym", weights=dataclasses.replace(r.weights, symmetric=False))
    calib = [torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    q = qpass.compile(tiny_model("llama"), r, calib, progress=False)
    assert all(sp.weight.zero is not None for sp in q.qpass_state.plan.values())
    assert qpass.report(q).summary()["not_lowered"] == []
    d = tmp_path / "tiny-w4a8-asym"
    qpass.save(q, d)
    zeros = [k for k in load_file(str(d / "weights.safetensors")) if k.endswith("weight_zero")]
    assert zeros, "the weight zero points are not among the saved tensors"
    ids = torch.randint(0, 256, (2, 19), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = q(ids).logits
    out = _reload_in_fresh_process(d, ids, "qpass.w4a8_linear.default", tmp_path)
    assert float((out - ref).abs().max()) <= 1e-4
    with pytest.raises(ValueError, match="not an integer weight without channel gather / input step"):
        qpass.save_compressed_tensors(q, tmp_path / "ct")  # the QSM plan, whatever the weights


def test_compressed_tensors_refuses_asymmetric_weights_with_quantized_activations(tmp_path):
    """Dynamic W4A8 with zero points lowers (rule w4a8) but the export writes zero points for W4A16 only."""
    from qpass import ActivationSpec, Recipe, WeightSpec

    r = Recipe("w4a8-asym", weights=WeightSpec(bits=4, group_size=32, symmetric=False),
               activations=ActivationSpec(bits=8, granularity="per_token"))
    q = qpass.compile(tiny_model("llama"), r, progress=False)
    assert {row.lowering for row in qpass.report(q).quantized} == {"w4a8"}
    with pytest.raises(ValueError, match="has weight zero points; only W4A16 weights may be asymmetric"):
        qpass.save_compressed_tensors(q, tmp_path / "ct")
    assert not (tmp_path / "ct").exists()
