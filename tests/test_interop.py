"""qpass.from_compressed_tensors: compressed-tensors checkpoints (qpass's own export, and ones written by the
compressed-tensors package itself) run on qpass kernels with the logits of qpass / transformers; bad folders are
refused with a message naming the problem."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

import qpass
from qpass.import_compressed import CompressedTensorsError, unpack_int32

from tiny_models import tiny_model

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
W4A16_G32 = {"name": "w4a16-g32", "weights": {"bits": 4, "group_size": 32}}
W4A16_ROW = {"name": "w4a16-row", "weights": {"bits": 4, "group_size": None}}
IDS = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(0))


def _logits(m, ids=IDS):
    with torch.no_grad():
        return m(ids).logits


def _ops(m) -> set:
    return set(m.qpass_state.lowering.values())


@pytest.mark.parametrize("recipe, rule", [(W4A16_G32, "w4a16"), ("w8a8", "w8a8")])
def test_round_trip_tiny(recipe, rule, tmp_path):
    """qpass export -> qpass import: the same integer plan, the same kernels, the same logits."""
    q = qpass.compile(tiny_model("llama"), recipe, progress=False)
    qpass.save_compressed_tensors(q, tmp_path / "ct")
    m = qpass.from_compressed_tensors(tmp_path / "ct")
    assert _ops(m) == {rule, "attention"} and len(m.qpass_state.plan.quantized()) == 14
    assert m.qpass_state.plan.skipped == {"lm_head": "ignored by the checkpoint (matches 'lm_head')"}
    for site, sp in q.qpass_state.plan.sites.items():
        if sp.weight is not None:
            assert torch.equal(m.qpass_state.plan[site].weight.qweight, sp.weight.qweight)
            assert torch.equal(m.qpass_state.plan[site].weight.scale, sp.weight.scale)
    torch.testing.assert_close(_logits(m), _logits(q), rtol=0, atol=1e-5)
    loaded = qpass.load(tmp_path / "ct")  # qpass.load recognises the folder
    torch.testing.assert_close(_logits(loaded), _logits(q), rtol=0, atol=1e-5)


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
@pytest.mark.parametrize("recipe, rule", [(W4A16_ROW, "w4a16"), ("w8a8", "w8a8")])
def test_round_trip_stories260k(recipe, rule, tmp_path):
    """The real stories260K (FFN 172 wide: per-channel int4, since no group size divides every width)."""
    model = tf.AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    q = qpass.compile(model, recipe, progress=False, copy=True)
    qpass.save_compressed_tensors(q, tmp_path / "ct")
    m = qpass.from_compressed_tensors(tmp_path / "ct")
    assert _ops(m) == {rule, "attention"} and len(m.qpass_state.plan.quantized()) == 35
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_logits(m, ids), _logits(q, ids), rtol=0, atol=1e-4)


def _ct_checkpoint(path, *, fmt, symmetric=True, group_size=32, act=False, seed=0):
    """A checkpoint written by the compressed-tensors package (not by qpass): its scheme applied to a tiny llama,
    qparams from its own calculate_qparams, its ModelCompressor compressing, save_pretrained + update_config
    (what llm-compressor's save does)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams

    model = tiny_model("llama", seed)
    bits = 8 if act else 4
    wargs = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, group_size=group_size,
                             strategy="group" if group_size else "channel")
    aargs = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True) if act else None
    apply_quantization_config(model, QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=wargs, input_activations=aargs)},
        ignore=["lm_head"]))
    for _, mod in model.named_modules():
        if getattr(mod, "quantization_scheme", None) is None:
            continue
        w = mod.weight.detach()
        g = w.reshape(w.shape[0], -1, group_size or w.shape[1])
        scale, zero = calculate_qparams(g.amin(-1), g.amax(-1), wargs)
        mod.weight_scale.data.copy_(scale)
        if not symmetric:
            mod.weight_zero_point.data.copy_(zero)
    compressor = ModelCompressor.from_pretrained_model(model, fmt)
    compressor.compress_model(model)
    model.save_pretrained(path)
    compressor.update_config(path)
    return path


@pytest.mark.parametrize("group_size", [32, None])
def test_compressed_tensors_w4a16_matches_transformers(group_size, tmp_path):
    """A symmetric W4A16 folder written by compressed-tensors: qpass (w4a16 kernel) == transformers' own load."""
    d = _ct_checkpoint(tmp_path / "ct", fmt="pack-quantized", group_size=group_size)
    m = qpass.from_compressed_tensors(d)
    assert _ops(m) == {"w4a16", "attention"}
    theirs = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(m), _logits(theirs), rtol=0, atol=1e-5)


def test_compressed_tensors_w8a8_matches_transformers(tmp_path):
    """int-quantized W8A8 (int8 channel weights, dynamic per-token int8 inputs) written by compressed-tensors:
    the int8 kernel; transformers decompresses the weights (and fake-quantizes inputs per token): close."""
    d = _ct_checkpoint(tmp_path / "ct", fmt="int-quantized", group_size=None, act=True)
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "int-quantized"
    m = qpass.from_compressed_tensors(d)
    assert _ops(m) == {"w8a8", "attention"}
    theirs = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(m), _logits(theirs), rtol=0, atol=0.02)


def test_asymmetric_w4a16_matches_the_package_decompression(tmp_path):
    """Zero points (packed along the output dim): qpass's weights equal compressed-tensors' own decompression, and
    the logits those weights give in plain torch. (transformers 5.25 with compressed-tensors 0.20.1 cannot load
    this folder itself: it refuses the packed zero points' shape.)"""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme

    d = _ct_checkpoint(tmp_path / "ct", fmt="pack-quantized", symmetric=False)
    m = qpass.from_compressed_tensors(d)
    assert _ops(m) == {"w4a16", "attention"}
    assert all(sp.weight.zero is not None for sp in m.qpass_state.plan.quantized())
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme.model_validate(qc["config_groups"]["group_0"])
    t = load_file(str(d / "model.safetensors"))
    ref = tiny_model("llama")
    with torch.no_grad():
        for name, mod in ref.named_modules():
            if f"{name}.weight_packed" in t:
                local = {k.rpartition(".")[2]: v for k, v in t.items() if k.rpartition(".")[0] == name}
                w = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
                torch.testing.assert_close(m.qpass_state.plan[name].weight.dequantize(), w, rtol=0, atol=0)
                mod.weight.copy_(w)
    torch.testing.assert_close(_logits(m), _logits(ref), rtol=0, atol=1e-5)


def test_unpack_matches_the_package():
    from compressed_tensors.compressors import pack_to_int32

    for bits in (2, 4, 8):
        codes = torch.randint(-(1 << bits - 1), 1 << bits - 1, (5, 37), dtype=torch.int8)
        assert torch.equal(unpack_int32(pack_to_int32(codes, bits), bits, 37), codes)
        assert torch.equal(unpack_int32(pack_to_int32(codes, bits, packed_dim=0), bits, 5, dim=0), codes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ct") / "w4"
    qpass.save_compressed_tensors(qpass.compile(tiny_model("llama"), W4A16_G32, progress=False, lower=False), d)
    return d


def _edited(exported, tmp_path, edit_config=None, edit_tensors=None):
    d = tmp_path / "edited"
    shutil.copytree(exported, d)
    if edit_config:
        cfg = json.loads((d / "config.json").read_text())
        edit_config(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    if edit_tensors:
        t = load_file(str(d / "model.safetensors"))
        edit_tensors(t)
        save_file(t, str(d / "model.safetensors"))
    return d


def test_missing_quantization_config(exported, tmp_path):
    d = _edited(exported, tmp_path, edit_config=lambda c: c.pop("quantization_config"))
    with pytest.raises(CompressedTensorsError, match="has no quantization_config"):
        qpass.from_compressed_tensors(d)


def test_unknown_format_names_format_and_layer(exported, tmp_path):
    d = _edited(exported, tmp_path, edit_config=lambda c: c["quantization_config"].update(format="marlin-24"))
    with pytest.raises(CompressedTensorsError, match=r"layer model\.layers\.0\.self_attn\.q_proj .*format 'marlin-24'"):
        qpass.from_compressed_tensors(d)


def test_float8_scheme_is_refused_or_kept_in_full_precision(tmp_path):
    """float-quantized (FP8) W8A8 from compressed-tensors: refused by default naming the scheme; with
    unsupported='dequantize' those layers run in full precision (the package's decompression) and the report
    says why."""
    from compressed_tensors.quantization import preset_name_to_scheme

    d = tmp_path / "fp8"
    model = tiny_model("llama")
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    for _, mod in model.named_modules():
        if getattr(mod, "quantization_scheme", None) is not None:
            w = mod.weight.detach()
            scale, _ = calculate_qparams(w.amin(-1, keepdim=True), w.amax(-1, keepdim=True), scheme.weights)
            mod.weight_scale.data.copy_(scale)
    compressor = ModelCompressor.from_pretrained_model(model, "float-quantized")
    compressor.compress_model(model)
    model.save_pretrained(d)
    compressor.update_config(d)
    with pytest.raises(CompressedTensorsError, match=r"layer model\.layers\.0\..*float-quantized.*weights of type 'float'"):
        qpass.from_compressed_tensors(d)
    m = qpass.from_compressed_tensors(d, unsupported="dequantize")
    rep = str(qpass.report(m))
    assert m.qpass_state.plan.quantized() == [] and "checkpoint scheme not runnable" in str(m.qpass_state.plan.skipped)
    assert "0/15 linear sites quantized" in rep
    theirs = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():  # the same FP8 weights; transformers also fake-quantizes the inputs to FP8
        torch.testing.assert_close(_logits(m), _logits(theirs), rtol=0, atol=0.05)


def test_wrong_shapes_name_the_layer(exported, tmp_path):
    p = "model.layers.1.mlp.down_proj"

    def cut(t):
        t[f"{p}.weight_scale"] = t[f"{p}.weight_scale"][:, :2].contiguous()
    d = _edited(exported, tmp_path, edit_tensors=cut)
    with pytest.raises(CompressedTensorsError, match=rf"layer {p}.*weight_scale is \[64, 2\], expected \[64, 3\]"):
        qpass.from_compressed_tensors(d)

    def drop(t):
        del t[f"{p}.weight_packed"]
    with pytest.raises(CompressedTensorsError, match=rf"{p}.weight_packed is missing"):
        qpass.from_compressed_tensors(_edited(exported, tmp_path / "b", edit_tensors=drop))

    def extra(t):
        t["model.layers.0.mlp.stray"] = torch.zeros(3)
    with pytest.raises(CompressedTensorsError, match="no place for: model.layers.0.mlp.stray"):
        qpass.from_compressed_tensors(_edited(exported, tmp_path / "c", edit_tensors=extra))


def test_remote_code_architectures_are_refused(exported, tmp_path):
    def custom(c):
        c["model_type"] = "my_custom_llm"
        c["auto_map"] = {"AutoModelForCausalLM": "modeling.MyLLM"}
    d = _edited(exported, tmp_path, edit_config=custom)
    with pytest.raises(CompressedTensorsError, match="remote code is never run"):
        qpass.from_compressed_tensors(d)
