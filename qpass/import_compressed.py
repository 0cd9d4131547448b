"""qpass.from_compressed_tensors: run a compressed-tensors checkpoint (llm-compressor's W4A16 / W8A8 output, or
`qpass.save_compressed_tensors`'s) on qpass kernels. See docs/export.md, "Importing compressed-tensors".

The folder is read as data only: `config.json` with `json`, the tensors with `safetensors` (no pickle, no
`trust_remote_code`, no code from the folder). The model skeleton is the transformers class `config.json`
names, built with `from_config`; the checkpoint's integer codes, scales and zero points become qpass's own
`QuantizedWeight` in a `Plan`, which goes through the same capture, Q/DQ rewrite and lowering rules as
`qpass.compile` (W4A16 -> `qpass::w4a16_linear`, W8A8 -> `qpass::int8_linear`), with the same report.
Anything this reader does not understand (a format, a scheme, a tensor, a shape) raises
`CompressedTensorsError` (a ValueError) naming the layer and the scheme — or, with `unsupported="dequantize"`, keeps that layer in
full precision (the checkpoint's dequantized weight) with the reason in the report. Never silently.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .numerics import QuantizedWeight
from .plan import ActQuant, Plan, SitePlan

FORMATS = ("pack-quantized", "int-quantized", "naive-quantized")  # the formats qpass runs


class CompressedTensorsError(ValueError):
    """A compressed-tensors folder qpass cannot read or run as it is: the message names the file or layer and why."""


@dataclass
class Scheme:
    """One `config_groups` entry, as far as qpass reads it."""

    group: str
    targets: list[str]
    format: str
    bits: int
    strategy: str  # channel | group | tensor
    group_size: int | None
    symmetric: bool
    act: dict | None  # input_activations, or None (weight-only)
    problems: list[str] = field(default_factory=list)  # why qpass cannot run it (empty: it can)

    def describe(self) -> str:
        a = "" if self.act is None else f", input a{self.act.get('num_bits')} {self.act.get('strategy')}" + \
            (" dynamic" if self.act.get("dynamic") else " static")
        g = f" g{self.group_size}" if self.strategy == "group" else f" per-{self.strategy}"
        return f"{self.group} ({self.format}: w{self.bits}{g}{'' if self.symmetric else ' asym'}{a})"


def _fail(msg: str):
    raise CompressedTensorsError(f"from_compressed_tensors: {msg}")


def _read_config(path: Path) -> tuple[dict, dict]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        _fail(f"{path} has no config.json (not a Hugging Face model folder)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompressedTensorsError(f"from_compressed_tensors: {cfg_file} is not readable JSON ({e})") from e
    qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    if not isinstance(qc, dict):
        _fail(f"{cfg_file} has no quantization_config: not a compressed-tensors checkpoint "
              "(a plain model folder loads with transformers, then qpass.compile)")
    if qc.get("quant_method") != "compressed-tensors":
        _fail(f"{cfg_file}: quantization_config.quant_method is {qc.get('quant_method')!r}, not 'compressed-tensors'")
    return cfg, qc


def is_compressed_tensors_folder(path: str | os.PathLike) -> bool:
    """True when `path` holds a config.json whose quantization_config is compressed-tensors (no qpass manifest)."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    return isinstance(qc, dict) and qc.get("quant_method") == "compressed-tensors"


def _schemes(qc: dict) -> list[Scheme]:
    """The config groups, each with the reasons (if any) qpass cannot run it. Model-wide features qpass does not
    implement (sparsity, transforms, a quantized KV cache) are refused here, whatever `unsupported` says."""
    for key, what in (("sparsity_config", "sparsity (e.g. 2:4)"), ("transform_config", "transforms (rotations)"),
                      ("kv_cache_scheme", "a quantized KV cache")):
        if qc.get(key):
            _fail(f"quantization_config.{key} is set: {what} is not supported by qpass's importer")
    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        _fail(f"quantization_status is {status!r}: qpass imports compressed checkpoints only")
    fmt = qc.get("format") or "dense"
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        _fail("quantization_config.config_groups is missing or empty")
    out = []
    for name, g in groups.items():
        if not isinstance(g, dict) or not isinstance(g.get("targets"), list):
            _fail(f"config_groups.{name} has no targets list")
        w = g.get("weights")
        gfmt = g.get("format") or fmt  # mixed-precision: each group names its own format
        if w is None:
            _fail(f"config_groups.{name} quantizes no weights (activation-only schemes are not supported)")
        strategy = w.get("strategy") or ("group" if w.get("group_size") else "channel")
        s = Scheme(name, list(g["targets"]), gfmt, int(w.get("num_bits", 0)), strategy,
                   w.get("group_size") if strategy == "group" else None, bool(w.get("symmetric", True)),
                   g.get("input_activations"))
        if gfmt not in FORMATS:
            s.problems.append(f"format {gfmt!r} is not supported (qpass reads {', '.join(FORMATS)})")
        if w.get("type", "int") != "int":
            s.problems.append(f"weights of type {w.get('type')!r} (only int)")
        if strategy not in ("channel", "group", "tensor"):
            s.problems.append(f"weight strategy {strategy!r} (only channel, group, tensor)")
        if w.get("actorder") == "group":
            s.problems.append("actorder 'group' (permuted groups, weight_g_idx) is not supported")
        if gfmt == "pack-quantized" and s.bits not in (2, 4, 8):
            s.problems.append(f"{s.bits}-bit packing (qpass unpacks 2, 4 and 8 bits)")
        if not 2 <= s.bits <= 8:
            s.problems.append(f"{s.bits}-bit weights")
        a = s.act
        if a is not None and not (a.get("type", "int") == "int" and a.get("num_bits") == 8 and a.get("dynamic") is True
                                  and a.get("strategy") == "token" and a.get("symmetric", True)):
            s.problems.append("input activations other than dynamic per-token symmetric int8 "
                              f"({a.get('type')}, {a.get('num_bits')} bits, strategy {a.get('strategy')}, "
                              f"dynamic {a.get('dynamic')})")
        if a is not None and (s.bits != 8 or not s.symmetric or strategy == "group"):
            s.problems.append("quantized activations with weights other than symmetric per-channel int8")
        if g.get("output_activations"):
            s.problems.append("quantized output activations")
        out.append(s)
    return out


def _matches(name: str, module: torch.nn.Module, target: str) -> bool:
    """compressed-tensors' target rule: `re:` + re.match on the module name, the exact name, or a class name in
    the module's MRO."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or any(c.__name__ == target for c in type(module).__mro__)


class _Tensors:
    """Read-only access to the folder's safetensors (one file, or shards listed by model.safetensors.index.json)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise CompressedTensorsError(f"from_compressed_tensors: {index} is not a safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
        elif (path / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            _fail(f"{path} has no model.safetensors (nor model.safetensors.index.json); "
                  "qpass reads safetensors only, never pickled .bin files")
        self.where: dict[str, object] = {}
        self._handles = []
        for f in files:
            fp = (path / f).resolve()
            if fp.parent != path.resolve():
                _fail(f"the safetensors index names {f!r}, outside the folder")
            try:
                h = safe_open(str(fp), "pt")
            except Exception as e:  # safetensors raises its own error types
                raise CompressedTensorsError(f"from_compressed_tensors: {fp} is not a readable safetensors file ({e})") from e
            self._handles.append(h)
            for k in h.keys():
                self.where[k] = h
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return self.where[key].get_tensor(key)


def unpack_int32(packed: torch.Tensor, bits: int, n: int, dim: int = 1) -> torch.Tensor:
    """compressed-tensors' `pack_to_int32` undone, for bit widths that divide 32 (2, 4, 8: the dense and the older
    layout agree): value j of a row sits at bits (j·b mod 32) of word j·b // 32, stored + 2^(b-1). Returns the
    signed int8 codes with `n` entries along `dim`."""
    if packed.dtype != torch.int32:
        raise ValueError(f"packed weights must be int32, got {packed.dtype}")
    p = packed if dim == 1 else packed.t()
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    vals = (p.to(torch.int64).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [rows, words, per]
    vals = vals.reshape(p.shape[0], -1)
    if vals.shape[1] < n:
        raise ValueError(f"{p.shape[1]} packed words hold {vals.shape[1]} values, fewer than {n}")
    out = (vals[:, :n] - (1 << (bits - 1))).to(torch.int8)
    return out if dim == 1 else out.t().contiguous()


def _site_weight(t: _Tensors, prefix: str, s: Scheme, shape: torch.Size) -> QuantizedWeight:
    """The checkpoint's codes / scales / zero points of one linear, checked against `shape` [out, in], as qpass's
    QuantizedWeight (symmetric codes signed; asymmetric codes and zeros shifted by 2^(b-1) into [0, 2^b - 1])."""
    out_f, in_f = shape
    where = f"layer {prefix} ({s.describe()})"

    def need(name):
        key = f"{prefix}.{name}"
        if key not in t:
            _fail(f"{where}: tensor {key} is missing from the safetensors")
        return t.get(key)

    if f"{prefix}.weight_g_idx" in t:
        _fail(f"{where}: has weight_g_idx (activation-ordered groups), which qpass does not support")
    if s.format == "pack-quantized":
        wshape = need("weight_shape")
        if wshape.tolist() != [out_f, in_f]:
            _fail(f"{where}: weight_shape {wshape.tolist()} does not match the model's [{out_f}, {in_f}]")
        packed = need("weight_packed")
        want = (out_f, -(-in_f * s.bits // 32))
        if packed.dtype != torch.int32 or tuple(packed.shape) != want:
            _fail(f"{where}: weight_packed is {packed.dtype} {list(packed.shape)}, expected int32 {list(want)}")
        codes = unpack_int32(packed, s.bits, in_f)
    else:
        codes = need("weight")
        if tuple(codes.shape) != (out_f, in_f):
            _fail(f"{where}: weight is {list(codes.shape)}, expected [{out_f}, {in_f}]")
        if codes.dtype != torch.int8:
            _fail(f"{where}: weight is {codes.dtype}, expected int8 codes")
    qmin, qmax = -(1 << (s.bits - 1)), (1 << (s.bits - 1)) - 1
    if int(codes.min()) < qmin or int(codes.max()) > qmax:
        _fail(f"{where}: codes outside the {s.bits}-bit range [{qmin}, {qmax}]")
    n_groups = -(-in_f // s.group_size) if s.strategy == "group" else 1
    scale = need("weight_scale")
    if s.strategy == "tensor" and scale.numel() == 1:
        scale = scale.reshape(1, 1).expand(out_f, 1)
    if tuple(scale.shape) != (out_f, n_groups):
        _fail(f"{where}: weight_scale is {list(scale.shape)}, expected [{out_f}, {n_groups}]")
    if not scale.is_floating_point():
        _fail(f"{where}: weight_scale is {scale.dtype}, expected a float tensor")
    zero = None
    if not s.symmetric:
        zp = need("weight_zero_point")
        if s.format == "pack-quantized" and zp.dtype == torch.int32:  # packed along the output dim
            want = (-(-out_f * s.bits // 32), n_groups)
            if tuple(zp.shape) != want:
                _fail(f"{where}: packed weight_zero_point is {list(zp.shape)}, expected {list(want)}")
            zp = unpack_int32(zp, s.bits, out_f, dim=0)
        if s.strategy == "tensor" and zp.numel() == 1:
            zp = zp.reshape(1, 1).expand(out_f, 1)
        if tuple(zp.shape) != (out_f, n_groups):
            _fail(f"{where}: weight_zero_point is {list(zp.shape)}, expected [{out_f}, {n_groups}]")
        offset = 1 << (s.bits - 1)
        codes = (codes.to(torch.int16) + offset).to(torch.int8 if s.bits < 8 else torch.uint8)
        zero = zp.float() + offset
    elif f"{prefix}.weight_zero_point" in t:  # symmetric: zero points, if written at all, must be 0
        if bool(t.get(f"{prefix}.weight_zero_point").any()):
            _fail(f"{where}: symmetric scheme with non-zero weight_zero_point")
    group = s.group_size if s.strategy == "group" else None
    return QuantizedWeight(codes.contiguous(), scale.float().contiguous(), zero, s.bits, group)


def _build_model(cfg: dict, dtype: torch.dtype, device):
    """The transformers model class config.json names, with empty (uninitialized) weights: no hub, no remote code."""
    import transformers as tf

    clean = {k: v for k, v in cfg.items() if k != "quantization_config"}
    model_type = clean.get("model_type")
    if model_type not in tf.CONFIG_MAPPING:
        _fail(f"config.json model_type {model_type!r} is not a transformers architecture (remote code is never run)")
    clean.pop("auto_map", None)
    config = tf.CONFIG_MAPPING[model_type].from_dict(clean)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights(), torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def from_compressed_tensors(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                            device: str | torch.device = "cpu", lower: bool = True,
                            unsupported: str = "error") -> torch.nn.Module:
    """A compressed-tensors checkpoint folder (config.json with `quantization_config`, safetensors) as a qpass
    model: called like an HF causal LM, its quantized linears lowered to qpass kernels, `qpass.report` saying
    what runs where. Reads `pack-quantized` (int4 / int2 / int8 codes, group / channel / tensor scales, symmetric
    or with zero points: W4A16), `int-quantized` (int8 weights + dynamic per-token int8 inputs: W8A8) and
    `naive-quantized`. `unsupported="error"` (default) refuses a layer whose scheme qpass cannot run, naming the
    layer and the scheme; `"dequantize"` keeps it in full precision with the dequantized weight (through the
    compressed-tensors package's own decompressor) and the reason in the report. `lower=False` keeps the
    fake-quant graph (the accuracy reference)."""
    from . import api
    from .recipe import Recipe
    from .specs import SUPPORTED_BITS, ActivationSpec, WeightSpec

    if unsupported not in ("error", "dequantize"):
        raise ValueError(f"unsupported= must be 'error' or 'dequantize', got {unsupported!r}")
    start = time.perf_counter()
    path = Path(path)
    cfg, qc = _read_config(path)
    schemes = _schemes(qc)
    ignore = qc.get("ignore") or []
    tensors = _Tensors(path)
    model = _build_model(cfg, dtype, device)

    # Which scheme each linear follows (compressed-tensors' rule: the targets match, the ignore list does not).
    assigned: dict[str, Scheme] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or any(_matches(name, mod, i) for i in ignore):
            continue
        hits = [s for s in schemes if any(_matches(name, mod, tg) for tg in s.targets)]
        if hits:
            assigned[name] = hits[-1]  # later groups override earlier ones, as in compressed-tensors
    if not assigned:
        _fail(f"no linear layer of the model matches config_groups targets {[s.targets for s in schemes]}")

    weights: dict[str, QuantizedWeight] = {}
    full_precision: dict[str, str] = {}
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, s in assigned.items():
            mod = model.get_submodule(name)
            if s.problems:
                if unsupported == "error":
                    _fail(f"layer {name} uses scheme {s.describe()}: {'; '.join(s.problems)}. "
                          "Pass unsupported='dequantize' to keep such layers in full precision")
                state[f"{name}.weight"] = _decompress(tensors, name, s, qc, mod.weight.shape)
                full_precision[name] = f"checkpoint scheme not runnable by qpass: {'; '.join(s.problems)}"
                continue
            qw = _site_weight(tensors, name, s, mod.weight.shape)
            weights[name] = qw
            state[f"{name}.weight"] = qw.dequantize(dtype)
        expected = dict(model.state_dict(keep_vars=True))
        for key in expected:
            if key not in state and key in tensors:
                state[key] = tensors.get(key)
        tied = _tied_keys(model)  # lm_head = embeddings: stored once, tied again below as transformers does
        missing = [k for k in expected if k not in state and k not in tied]
        if missing:
            _fail(f"tensors missing from the safetensors: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
        extra = [k for k in sorted(set(tensors.where) - tensors.used - set(state)) if not _is_quant_param(k, assigned)]
        if extra:
            _fail(f"tensors in the safetensors that the model has no place for: {', '.join(extra[:8])}"
                  f"{' …' if len(extra) > 8 else ''} (a quantized layer the config does not target?)")
        for key, value in state.items():
            want = expected[key]
            if tuple(value.shape) != tuple(want.shape):
                _fail(f"tensor {key} is {list(value.shape)}, the model expects {list(want.shape)}")
            want.data = value.to(device=want.device, dtype=want.dtype if want.is_floating_point() else value.dtype)
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
    model.requires_grad_(False)

    example = api._example_input(model, None)
    captured = api.capture_analysis(model, example)
    analysis = captured.analysis
    plan = Plan()
    by_weight = {s.weight: s for s in analysis.linears}
    for name, qw in weights.items():
        site = by_weight.get(f"{name}.weight")
        if site is None:
            _fail(f"layer {name} is quantized in the checkpoint but its weight is not used as a linear in the "
                  "captured graph")
        s = assigned[name]
        act = ActQuant(8, "per_token", True) if s.act is not None else None
        plan[site.name] = SitePlan(site.name, site.weight, dtype, qw, act)
    for site in analysis.linears:
        if site.name in plan.sites:
            continue
        module = site.name
        hit = next((i for i in ignore if _is_module(model, module) and _matches(module, model.get_submodule(module), i)),
                   None)
        plan.skipped[site.name] = full_precision.get(module) or (
            f"ignored by the checkpoint (matches {hit!r})" if hit is not None else "not quantized in the checkpoint")
    kinds = sorted({assigned[n].describe() for n in weights})
    plan.log.append(f"imported {len(weights)} quantized linears from compressed-tensors {path.name}: {'; '.join(kinds)}"
                    + (f"; {len(full_precision)} kept in full precision (unsupported scheme)" if full_precision else ""))
    # The recipe qpass_state carries (report title, qpass.save's recipe.json): the checkpoint's (first) scheme.
    first = assigned[next(iter(weights))] if weights else next(iter(assigned.values()))
    recipe = Recipe(
        name=f"compressed-tensors:{first.format}" + ("" if weights else " (dequantized)"),
        weights=WeightSpec(bits=first.bits if first.bits in SUPPORTED_BITS else 8, group_size=first.group_size,
                           symmetric=first.symmetric),
        activations=ActivationSpec() if first.act is not None and weights else None,
        ignore=list(ignore) or ["lm_head"])
    return api.finish(model, recipe, captured, plan, lower, start, example)


def _tied_keys(model) -> set[str]:
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    keys = getattr(model, "_tied_weights_keys", None) or ()
    return set(keys) | {"lm_head.weight"}


def _is_module(model, name) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _is_quant_param(key: str, assigned: dict[str, Scheme]) -> bool:
    """A quantization tensor of a targeted layer (weight_*, input_* / output_* scales and zero points): read for
    the weight, or (input / output quantization qpass refuses or drops with the layer's scheme) not needed."""
    prefix, _, leaf = key.rpartition(".")
    return prefix in assigned and leaf.startswith(("weight_", "input_", "output_"))


def _decompress(tensors: _Tensors, name: str, s: Scheme, qc: dict, shape) -> torch.Tensor:
    """A layer qpass cannot run, dequantized by the compressed-tensors package's own decompressor."""
    try:
        from compressed_tensors.compressors.base import BaseCompressor
        from compressed_tensors.quantization import QuantizationScheme
    except ImportError as e:
        raise ImportError(f"from_compressed_tensors(unsupported='dequantize') needs the compressed-tensors package "
                          f"(pip install 'qpass[compressed]') for layer {name}: {e}") from e
    group = qc["config_groups"][s.group]
    try:
        compressor = BaseCompressor.get_value_from_registry(s.format)
        scheme = QuantizationScheme.model_validate(group)
        local = {k.rpartition(".")[2]: tensors.get(k) for k in list(tensors.where) if k.rpartition(".")[0] == name}
        weight = compressor.decompress(local, scheme)["weight"]
    except Exception as e:  # the package raises many kinds; say which layer and scheme failed
        raise CompressedTensorsError(f"from_compressed_tensors: layer {name} ({s.describe()}) could not be "
                                     f"dequantized by compressed-tensors: {e}") from e
    if tuple(weight.shape) != tuple(shape):
        _fail(f"layer {name}: dequantized weight is {list(weight.shape)}, the model expects {list(shape)}")
    return weight
