"""Save and load lowered models: qpass's own format (safetensors + torch.export program + JSON manifest) and
the compressed-tensors layout vLLM loads. See docs/export.md.

Format (directory, written atomically: a temp dir beside the target, then rename):
    manifest.json      format version, qpass/torch versions, recipe name, sha256 + size of every other file
    recipe.json        the recipe (Recipe.to_json)
    weights.safetensors every tensor the program holds (packed int4/trit/int8 weights, scales, fp params)
    program.pt2        the lowered graph via torch.export (input_ids [batch, seq] -> logits, dynamic dims)
    generation_config.json, tokenizer files   for Hugging Face tools (the model's generation config; the
                       tokenizer passed as `tokenizer=`): hashed in the manifest's `extra_files`
Loading checks the version, then every file's size and sha256, then that the program archive holds no pickled
payload, and only then deserializes anything; the program's tensors are then replaced by the safetensors ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
import torch.fx as fx

FORMAT = "qpass-lowered"
FORMAT_VERSION = 1
FILES = ("recipe.json", "weights.safetensors", "program.pt2")
MANIFEST = "manifest.json"


class LoadError(RuntimeError):
    """A saved qpass model that cannot be trusted or read: nothing was loaded."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Program(torch.nn.Module):
    """input_ids -> logits around a self-contained graph (no parameter placeholders)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, input_ids):
        return self.gm(input_ids)[0]


def _self_contained(ep, cap) -> fx.GraphModule:
    """Turn the (transformed) exported graph's parameter/buffer/constant placeholders into GraphModule
    buffers (dropping those no node uses any more: the float weights the kernels replaced)."""
    from torch.export.graph_signature import InputKind

    gm, graph = cap.gm, cap.graph
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    for i, spec in enumerate(ep.graph_signature.input_specs):
        node = placeholders[spec.arg.name]
        if spec.kind == InputKind.USER_INPUT:
            if not node.users and "input_ids" not in node.name:  # use_cache=False: a constant
                graph.erase_node(node)
            continue
        if not node.users:
            graph.erase_node(node)
            continue
        value = ep.state_dict.get(spec.target, ep.constants.get(spec.target))
        name = f"qpass_const_{i}"
        gm.register_buffer(name, value.detach().clone(), persistent=False)
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        attr.meta.update(node.meta)
        node.replace_all_uses_with(attr)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def export_program(qmodel: torch.nn.Module, example: torch.Tensor | None = None):
    """The lowered graph of a qpass.compile'd model as an ExportedProgram: input_ids -> logits, batch and
    sequence dims dynamic. The same transform as the compiled forward runs on the torch.export graph."""
    from torch.export import Dim, export

    from .capture import export_graph
    from .lowering.lower import quantize_transform

    state = getattr(qmodel, "qpass_state", None)
    if state is None:
        raise ValueError("qpass.save: this model was not produced by qpass.compile (it has no qpass_state)")
    device = next(qmodel.parameters()).device
    if example is None:
        vocab = getattr(getattr(qmodel, "config", None), "vocab_size", 2) or 2
        example = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    compiled = qmodel.__dict__.pop("forward", None)  # export the model's own forward, not the Dynamo wrapper
    try:
        with torch.no_grad():
            ep, cap = export_graph(qmodel, example, dynamic=True)
    finally:
        if compiled is not None:
            qmodel.forward = compiled
    quantize_transform(state.plan, lower=state.lowered)(cap)
    program = _Program(_self_contained(ep, cap))
    shapes = {"input_ids": {0: Dim("batch"), 1: Dim("seq")}}
    with torch.no_grad():
        return export(program, (example,), dynamic_shapes=shapes, strict=False)


def _program_tensors(ep) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in list(ep.state_dict.items()) + list(ep.constants.items()):
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().contiguous().clone()
    return out


def _hollow(ep) -> None:
    """Replace the program's tensors by zero-stride views of one zero (same shape and dtype, one element of
    storage), so program.pt2 holds the graph and not a second copy of the weights; load fills them back."""
    for store in (ep.state_dict, ep.constants):
        for k, v in list(store.items()):
            if isinstance(v, torch.Tensor):
                hollow = torch.zeros((), dtype=v.dtype).expand(v.shape)
                store[k] = torch.nn.Parameter(hollow, requires_grad=False) if isinstance(v, torch.nn.Parameter) else hollow


def _check_tokenizer(tokenizer, who: str) -> None:
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise TypeError(f"{who}: tokenizer= must be a Hugging Face tokenizer (with save_pretrained), "
                        f"got {type(tokenizer).__name__}")


def _write_hf_files(qmodel: torch.nn.Module, folder: Path, tokenizer, reserved: tuple[str, ...]) -> None:
    """The files Hugging Face tools read beside the weights: the tokenizer's (`tokenizer.save_pretrained`) and
    `generation_config.json` (from `qmodel.generation_config`, when the model has one). Written first, so a
    name of ours they would take is caught instead of silently overwritten."""
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    generation_config = getattr(qmodel, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(str(folder))
    taken = [name for name in reserved if (folder / name).exists()]
    if taken:
        raise ValueError(f"the tokenizer wrote {', '.join(taken)}, a file name the saved model needs")


def _extra_files(folder: Path) -> list[str]:
    """Every file under `folder` other than the format's own, as sorted relative POSIX paths."""
    own = set(FILES) | {MANIFEST}
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                  and p.relative_to(folder).as_posix() not in own)


def _file_entry(f: Path) -> dict:
    return {"sha256": _sha256(f), "bytes": f.stat().st_size}


def save(qmodel: torch.nn.Module, path: str | os.PathLike, *, example: torch.Tensor | None = None,
         overwrite: bool = False, tokenizer=None) -> Path:
    """Write `qmodel` (from qpass.compile) to directory `path`; returns it. Atomic: a reader sees the old
    directory or the complete new one, never a partial write.

    `tokenizer` (a Hugging Face tokenizer, optional) is saved into the directory too, and the model's
    `generation_config` always is when it has one, so `AutoTokenizer.from_pretrained(path)` and
    `GenerationConfig.from_pretrained(path)` work on it; both are hashed in the manifest (`extra_files`)."""
    from safetensors.torch import save_file

    import qpass

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"qpass.save: {path} exists (pass overwrite=True to replace it)")
    _check_tokenizer(tokenizer, "qpass.save")
    ep = export_program(qmodel, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_hf_files(qmodel, tmp, tokenizer, FILES + (MANIFEST,))
        (tmp / "recipe.json").write_text(qmodel.qpass_state.recipe.to_json())
        save_file(_program_tensors(ep), str(tmp / "weights.safetensors"), metadata={"format": FORMAT})
        _hollow(ep)  # the tensors live in weights.safetensors only
        ep._example_inputs = None  # no pickled sample inputs in the archive (see _refuse_pickle)
        torch.export.save(ep, tmp / "program.pt2")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "qpass_version": qpass.__version__,
            "torch_version": torch.__version__,
            "recipe": qmodel.qpass_state.recipe.name,
            "lowered": bool(qmodel.qpass_state.lowered),
            "files": {f: _file_entry(tmp / f) for f in FILES},
            # tokenizer / generation config: checked by qpass.load like `files`; a separate key, so a version-1
            # reader that predates it (and wants `files` to be exactly FILES) still loads the program
            "extra_files": {f: _file_entry(tmp / f) for f in _extra_files(tmp)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check(path: Path) -> dict:
    """Version and integrity checks; reads nothing but JSON and raw bytes."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise LoadError(f"qpass.load: {path} has no manifest.json (not a qpass save, or incomplete)")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"qpass.load: {mf} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LoadError(f"qpass.load: {mf} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise LoadError(
            f"qpass.load: format version {manifest.get('format_version')!r} is not supported; "
            f"this qpass reads version {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise LoadError(f"qpass.load: the manifest must list exactly {', '.join(FILES)}")
    extra = manifest.get("extra_files", {})  # tokenizer, generation_config.json (absent in older saves)
    if not isinstance(extra, dict):
        raise LoadError("qpass.load: the manifest's extra_files must be a mapping")
    root = path.resolve()
    for name in extra:
        parts = Path(name).parts if isinstance(name, str) else ()
        inside = bool(parts) and not Path(name).is_absolute() and ".." not in parts
        if not inside or name in FILES or name == MANIFEST or root not in (root / name).resolve().parents:
            raise LoadError(f"qpass.load: the manifest lists {name!r}, which is not a file inside the saved directory")
    for name, meta in {**files, **extra}.items():
        if not isinstance(meta, dict):
            raise LoadError(f"qpass.load: the manifest entry of {name!r} is not a mapping")
        f = path / name
        if not f.is_file():
            raise LoadError(f"qpass.load: {f} is missing")
        size = f.stat().st_size
        if size != meta.get("bytes"):
            raise LoadError(f"qpass.load: {f} has {size} bytes, the manifest says {meta.get('bytes')} (truncated or replaced)")
        if _sha256(f) != meta.get("sha256"):
            raise LoadError(f"qpass.load: {f} does not match its sha256 in the manifest (corrupted or tampered)")
    _refuse_pickle(path / "program.pt2")
    return manifest


def _refuse_pickle(pt2: Path) -> None:
    """torch.export.load unpickles payloads flagged `use_pickle` (tensor subclasses, opaque constants) with
    weights_only=False; a qpass program has none, so any such flag (or a legacy pickled file) is refused."""
    try:
        with zipfile.ZipFile(pt2) as z:
            for name in z.namelist():
                low = name.lower()
                if "sample_inputs" in low:  # deserialized by torch.load with a weights_only=False fallback
                    if z.getinfo(name).file_size:
                        raise LoadError(f"qpass.load: {pt2} holds serialized sample inputs {name!r}; refusing to unpickle them")
                    continue
                if low.endswith((".pt", ".pkl", ".pickle")) or "/pickle" in low:
                    raise LoadError(f"qpass.load: {pt2} holds a pickled entry {name!r}; refusing to load it")
                if low.endswith(".json") and ("weights_config" in low or "constants_config" in low):
                    cfg = json.loads(z.read(name))
                    for fqn, meta in (cfg.get("config") or {}).items():
                        if isinstance(meta, dict) and meta.get("use_pickle"):
                            raise LoadError(f"qpass.load: {pt2} stores {fqn!r} pickled; refusing to load it")
    except zipfile.BadZipFile as e:
        raise LoadError(f"qpass.load: {pt2} is not a valid archive ({e})") from None


class LoadedModel(torch.nn.Module):
    """A model loaded by qpass.load: `model(input_ids) -> logits`, and a cache-less greedy `generate`."""

    def __init__(self, module: torch.nn.Module, manifest: dict, recipe: dict):
        super().__init__()
        self.module = module
        self.manifest, self.recipe = manifest, recipe

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        if use_cache:
            raise ValueError("a qpass.load model has no KV cache (use_cache=True)")
        return self.module(input_ids)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy decoding: `input_ids` [batch, seq] followed by up to `max_new_tokens` tokens. The program
        has no KV cache, so every step re-runs the whole prefix (quadratic; fine for checks, not for
        serving — HF `generate` on the `qpass.compile` model has the cache). Finished rows (eos) keep eos."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        ids = input_ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            nxt = self(ids)[:, -1].argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            ids = torch.cat([ids, nxt[:, None].to(ids.dtype)], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
        return ids


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> LoadedModel:
    """Load a directory written by qpass.save. Raises LoadError (and loads nothing) on an unknown format
    version, or a missing, truncated, corrupted or tampered file."""
    from safetensors.torch import load_file

    import qpass.kernels.ops  # noqa: F401  (registers the qpass:: kernel ops the program calls)

    path = Path(path)
    manifest = _check(path)
    recipe = json.loads((path / "recipe.json").read_text())
    tensors = load_file(str(path / "weights.safetensors"), device=str(device or "cpu"))
    with warnings.catch_warnings():  # the program's tensors are hollow on purpose (see _hollow)
        warnings.filterwarnings("ignore", message="No complete tensor found")
        ep = torch.export.load(path / "program.pt2")
    for store in (ep.state_dict, ep.constants):
        for k in list(store):
            if isinstance(store[k], torch.Tensor):
                if k not in tensors or tensors[k].shape != store[k].shape or tensors[k].dtype != store[k].dtype:
                    raise LoadError(f"qpass.load: weights.safetensors does not hold the program's tensor {k!r}")
                store[k] = torch.nn.Parameter(tensors[k], requires_grad=False) if isinstance(store[k], torch.nn.Parameter) else tensors[k]
    module = ep.module()
    if device is not None:
        module.to(device)
    return LoadedModel(module, manifest, recipe)


# ----------------------------------------------------------------------------------- compressed-tensors (vLLM)
def pack_to_int32(q: torch.Tensor, bits: int) -> torch.Tensor:
    """compressed-tensors `pack-quantized`: signed codes offset to unsigned (q + 2^(bits-1)), 32/bits per
    int32 along the input dim, value j of a word at bits [j·bits, (j+1)·bits); rows padded with zero codes."""
    per = 32 // bits
    u = (q.to(torch.int64) + (1 << (bits - 1))) & ((1 << bits) - 1)
    pad = -u.shape[1] % per
    u = torch.nn.functional.pad(u, (0, pad)).view(u.shape[0], -1, per)
    shifts = torch.arange(per, dtype=torch.int64, device=q.device) * bits
    words = (u << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_from_int32(packed: torch.Tensor, bits: int, columns: int) -> torch.Tensor:
    """Inverse of pack_to_int32 -> int8 codes [rows, columns]."""
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64, device=packed.device) * bits
    u = (packed.to(torch.int64)[..., None] >> shifts) & ((1 << bits) - 1)
    return (u.reshape(packed.shape[0], -1)[:, :columns] - (1 << (bits - 1))).to(torch.int8)


def _ct_scheme(plans) -> tuple[str, dict]:
    from .numerics import QuantizedWeight

    kinds = set()
    for sp in plans:
        w, a = sp.weight, sp.activation
        if not isinstance(w, QuantizedWeight) or w.zero is not None or sp.gather is not None or sp.input_step is not None:
            raise ValueError(f"compressed-tensors export: site {sp.site} ({sp.describe()}) is not a symmetric "
                             "integer weight without channel gather / input step")
        if a is None and w.bits == 4:
            kinds.add(("w4a16", w.group_size))
        elif a is not None and w.bits == 8 and a.bits == 8 and a.granularity == "per_token" and a.symmetric and not w.group_size:
            kinds.add(("w8a8", None))
        else:
            raise ValueError(f"compressed-tensors export: site {sp.site} ({sp.describe()}) is neither W4A16 nor W8A8 "
                             "(per-channel int8 weights, dynamic per-token int8 activations)")
    if len(kinds) != 1:
        raise ValueError(f"compressed-tensors export: one scheme per model, found {sorted(map(str, kinds))}")
    kind, group = kinds.pop()
    base = {"type": "int", "symmetric": True, "dynamic": False, "actorder": None, "observer": "minmax",
            "observer_kwargs": {}, "block_structure": None}
    if kind == "w4a16":
        weights = dict(base, num_bits=4, group_size=group, strategy="group" if group else "channel")
        return "pack-quantized", {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                  "output_activations": None}
    weights = dict(base, num_bits=8, group_size=None, strategy="channel")
    acts = dict(base, num_bits=8, group_size=None, strategy="token", dynamic=True, observer="memoryless")
    return "int-quantized", {"targets": ["Linear"], "weights": weights, "input_activations": acts,
                             "output_activations": None}


def save_compressed_tensors(qmodel: torch.nn.Module, path: str | os.PathLike, *, tokenizer=None) -> Path:
    """Write a W4A16 (`pack-quantized`) or W8A8 (`int-quantized`) qpass model as a Hugging Face folder in the
    compressed-tensors layout vLLM loads: config.json with `quantization_config`, model.safetensors with
    `<module>.weight_packed` int32 / `<module>.weight` int8, `weight_scale` [out, groups], `weight_shape`;
    generation_config.json when the model has one, and the tokenizer's files when `tokenizer` is given."""
    from safetensors.torch import save_file

    state = getattr(qmodel, "qpass_state", None)
    if state is None:
        raise ValueError("save_compressed_tensors: this model was not produced by qpass.compile")
    _check_tokenizer(tokenizer, "save_compressed_tensors")
    by_name = {s.name: s for s in state.analysis.linears}
    plans = [sp for sp in state.plan.values() if sp.weight is not None or sp.activation is not None]
    fmt, group = _ct_scheme(plans)
    dtype = next(qmodel.parameters()).dtype
    tensors = {k: v.detach() for k, v in qmodel.state_dict().items()}
    for sp in plans:
        site = by_name[sp.site]
        if site.transposed or not sp.weight_fqn.endswith(".weight"):
            raise ValueError(f"save_compressed_tensors: {sp.site} is not an nn.Linear-layout weight")
        prefix, w = sp.weight_fqn[: -len(".weight")], sp.weight
        tensors.pop(sp.weight_fqn, None)
        if fmt == "pack-quantized":
            tensors[f"{prefix}.weight_packed"] = pack_to_int32(w.qweight, w.bits)
            tensors[f"{prefix}.weight_shape"] = torch.tensor(list(w.qweight.shape), dtype=torch.int64)
        else:
            tensors[f"{prefix}.weight"] = w.qweight.to(torch.int8)
        tensors[f"{prefix}.weight_scale"] = w.scale.to(dtype)
    ignore = sorted(s.name for s in state.analysis.linears if s.name not in {sp.site for sp in plans})
    config = qmodel.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
        "config_groups": {"group_0": group}, "ignore": ignore, "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_hf_files(qmodel, path, tokenizer, ())  # first: config.json and model.safetensors below are ours
    seen, out = {}, {}
    for k, v in tensors.items():  # safetensors refuses shared storage (tied embeddings): store copies
        out[k] = v.contiguous().clone() if v.data_ptr() in seen else v.contiguous()
        seen[v.data_ptr()] = k
    save_file({k: v.cpu() for k, v in out.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    return path
