"""qpass.save_compressed_tensors: a W4A16 / W8A8 qpass model as a Hugging Face folder in the compressed-tensors
layout (what transformers and vLLM load), built with the `compressed-tensors` package itself: its
`pack_to_int32` packs the int4 codes and its `QuantizationConfig` writes `quantization_config`. See docs/export.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .export import _check_tokenizer, _write_hf_files

INSTALL_HINT = "pip install 'qpass[compressed]'"


def require_package():
    """The package's pieces this export uses (present from compressed-tensors 0.16 on), imported on first use."""
    try:
        from compressed_tensors import CompressionFormat
        from compressed_tensors.compressors import pack_to_int32
        from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                     QuantizationStatus)
    except ImportError as e:
        raise ImportError(f"save_compressed_tensors needs the compressed-tensors package ({INSTALL_HINT}): {e}") from e
    return (CompressionFormat, pack_to_int32, QuantizationArgs, QuantizationConfig, QuantizationScheme,
            QuantizationStatus)


def _scheme(plans) -> tuple[str, int | None, bool]:
    """("w4a16", group size or None, symmetric) or ("w8a8", None, True): the one scheme every quantized site
    follows. W4A16 may be asymmetric (zero points); W8A8 is symmetric."""
    from .numerics import QuantizedWeight

    kinds = set()
    for sp in plans:
        w, a = sp.weight, sp.activation
        if not isinstance(w, QuantizedWeight) or sp.gather is not None or sp.input_step is not None:
            raise ValueError(f"compressed-tensors export: site {sp.site} ({sp.describe()}) is not an "
                             "integer weight without channel gather / input step")
        if w.zero is not None and (a is not None or w.bits != 4):
            raise ValueError(f"compressed-tensors export: site {sp.site} ({sp.describe()}) has weight zero points; "
                             "only W4A16 weights may be asymmetric")
        if a is None and w.bits == 4:
            if w.group_size and w.qweight.shape[-1] % w.group_size:  # compressed-tensors needs whole groups
                raise ValueError(f"compressed-tensors export: site {sp.site} has {w.qweight.shape[-1]} input columns, "
                                 f"not a multiple of its group size {w.group_size}; the layout (and vLLM) takes whole "
                                 "groups only: choose a group size that divides every layer's input width")
            kinds.add(("w4a16", w.group_size, w.zero is None))
        elif a is not None and w.bits == 8 and a.bits == 8 and a.granularity == "per_token" and a.symmetric and \
                a.clip_ratio == 1.0 and not w.group_size:  # vLLM's dynamic step is max|x| / 127: no clip
            kinds.add(("w8a8", None, True))
        else:
            raise ValueError(f"compressed-tensors export: site {sp.site} ({sp.describe()}) is neither W4A16 nor W8A8 "
                             "(per-channel int8 weights, dynamic per-token int8 activations, unclipped)")
    if len(kinds) != 1:
        raise ValueError(f"compressed-tensors export: one scheme per model, found {sorted(map(str, kinds))}")
    return kinds.pop()


def save_compressed_tensors(qmodel: torch.nn.Module, path: str | os.PathLike, *, tokenizer=None) -> Path:
    """Write a W4A16 (`pack-quantized`) or W8A8 (`int-quantized`) qpass model as a Hugging Face folder in the
    compressed-tensors layout vLLM loads: config.json with `quantization_config`, model.safetensors with
    `<module>.weight_packed` int32 / `<module>.weight` int8, `weight_scale` [out, groups], `weight_shape`;
    generation_config.json when the model has one, and the tokenizer's files when `tokenizer` is given.
    Needs the compressed-tensors package (`pip install 'qpass[compressed]'`)."""
    from safetensors.torch import save_file

    state = getattr(qmodel, "qpass_state", None)
    if state is None:
        raise ValueError("save_compressed_tensors: this model was not produced by qpass.compile")
    _check_tokenizer(tokenizer, "save_compressed_tensors")
    Format, pack_to_int32, Args, Config, Scheme, Status = require_package()
    by_name = {s.name: s for s in state.analysis.linears}
    plans = [sp for sp in state.plan.values() if sp.weight is not None or sp.activation is not None]
    kind, group, symmetric = _scheme(plans)
    if kind == "w4a16":
        fmt = Format.pack_quantized
        scheme = Scheme(targets=["Linear"], weights=Args(num_bits=4, type="int", symmetric=symmetric, group_size=group,
                                                         strategy="group" if group else "channel"))
    else:
        fmt = Format.int_quantized
        scheme = Scheme(targets=["Linear"], weights=Args(num_bits=8, type="int", symmetric=True, strategy="channel"),
                        input_activations=Args(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True))
    dtype = next(qmodel.parameters()).dtype
    tensors = {k: v.detach() for k, v in qmodel.state_dict().items()}
    for sp in plans:
        if by_name[sp.site].transposed or not sp.weight_fqn.endswith(".weight"):
            raise ValueError(f"save_compressed_tensors: {sp.site} is not an nn.Linear-layout weight")
        prefix, w = sp.weight_fqn[: -len(".weight")], sp.weight
        tensors.pop(sp.weight_fqn, None)
        codes = w.qweight.to(torch.int8)
        if w.zero is not None:  # qpass codes and zeros are [0, 2^b-1]; compressed-tensors' are signed, both shifted
            offset = 1 << (w.bits - 1)
            codes = codes - offset
            zero = (w.zero - offset).to(torch.int8)
            tensors[f"{prefix}.weight_zero_point"] = pack_to_int32(zero, w.bits, packed_dim=0)  # as the package packs
        if fmt == Format.pack_quantized:
            tensors[f"{prefix}.weight_packed"] = pack_to_int32(codes, w.bits)
            tensors[f"{prefix}.weight_shape"] = torch.tensor(list(codes.shape), dtype=torch.int64)
        else:
            tensors[f"{prefix}.weight"] = codes
        tensors[f"{prefix}.weight_scale"] = w.scale.to(dtype)
    quantized = {sp.site for sp in plans}
    ignore = sorted(s.name for s in state.analysis.linears if s.name not in quantized)
    quant_config = Config(config_groups={"group_0": scheme}, format=fmt.value, ignore=ignore,
                          quantization_status=Status.COMPRESSED)
    config = qmodel.config.to_dict()
    config["quantization_config"] = quant_config.to_dict()
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_hf_files(qmodel, path, tokenizer, ())  # first: config.json and model.safetensors below are ours
    # Tied weights (embedding and lm_head sharing one tensor) are written once, under the first name, as
    # save_pretrained does: transformers ties them again on load because config.json says tie_word_embeddings.
    # Without that flag a shared tensor is stored twice (safetensors refuses shared storage), so nothing is lost.
    tied = bool(getattr(qmodel.config, "tie_word_embeddings", False))
    seen, out = set(), {}
    for k, v in tensors.items():
        if v.data_ptr() in seen and tied:
            continue
        out[k] = v.contiguous().clone() if v.data_ptr() in seen else v.contiguous()
        seen.add(v.data_ptr())
    save_file({k: v.cpu() for k, v in out.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    return path
