"""Save and load lowered models in qpass's own format (safetensors + torch.export program + JSON manifest);
the compressed-tensors layout vLLM loads is qpass/export_compressed.py. See docs/export.md.

Format (directory, written transactionally: a temp dir beside the target, fsync'ed, then renamed in):
    manifest.json      format version, qpass/torch versions, recipe name, sha256 + size of every other file
    recipe.json        the recipe (Recipe.to_json)
    weights.safetensors every tensor the program holds (packed int4/trit/int8 weights, scales, fp params)
    program.pt2        the lowered graph via torch.export (input_ids [batch, seq] -> logits, dynamic dims)
    generation_config.json, tokenizer files   for Hugging Face tools (the model's generation config; the
                       tokenizer passed as `tokenizer=`): hashed in the manifest's `extra_files`
Loading checks the version, then every file's size and sha256, then program.pt2 against an allow-list of what a
qpass program holds (graph JSON, version files, hollow plain tensors; no pickled, opaque or custom-class
payload, no sample inputs, no guard code, only known operators, sympy-only symbolic expressions), and only then
lets torch read it; the program's tensors are then replaced by the safetensors ones. Every failure is LoadError.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
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

    from .capture import export_graph, tracing_config
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
    with torch.no_grad(), tracing_config(dynamic=True):
        return export(program, (example,), dynamic_shapes=shapes, strict=False,
                      prefer_deferred_runtime_asserts_over_guards=True)


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


def _example_for_export(example: torch.Tensor | None) -> torch.Tensor | None:
    """The example torch.export traces with. Both dims are exported dynamic, and torch.export specializes a
    dim whose example size is 0 or 1, so a smaller example is tiled (its own token ids repeated) to at least
    2 rows and 2 positions; the saved program still accepts any [batch, seq], (1, 1) included."""
    if example is None:
        return None
    if not isinstance(example, torch.Tensor) or example.dim() != 2 or example.dtype.is_floating_point \
            or example.dtype.is_complex or example.dtype == torch.bool:
        raise ValueError("qpass.save: example= must be an integer input_ids tensor [batch, seq], got "
                         + (f"{example.dtype} {tuple(example.shape)}" if isinstance(example, torch.Tensor)
                            else type(example).__name__))
    b, s = example.shape
    if b == 0 or s == 0:
        raise ValueError(f"qpass.save: example= is empty ({tuple(example.shape)}); give at least one token")
    if b >= 2 and s >= 2:
        return example
    rows, cols = max(b, 2), (s if s >= 2 else 16)
    return example.repeat(-(-rows // b), -(-cols // s))[:rows, :cols].contiguous()


def _fsync_file(f: Path) -> None:
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    """Make a directory's entries (creations, renames) durable. Not every platform can open a directory."""
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on a directory (EINVAL): nothing more to do there
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _new_sibling(path: Path, tag: str) -> Path:
    """A new empty directory `.<name>.qpass-<tag>-<random>` beside `path`, with the permissions a plain mkdir
    gives (tempfile.mkdtemp's would make the renamed save owner-only)."""
    while True:
        d = path.parent / f".{path.name}.qpass-{tag}-{secrets.token_hex(6)}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue


def _is_qpass_save(path: Path) -> str | None:
    """None when `path` is a directory written by qpass.save (its manifest.json names our format), else why
    not. Only such a directory may be replaced by save(..., overwrite=True)."""
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is not a directory"
    mf = path / MANIFEST
    if not mf.is_file():
        return f"it has no {MANIFEST}"
    try:
        manifest = json.loads(mf.read_bytes())
    except (OSError, ValueError) as e:
        return f"its {MANIFEST} cannot be read ({e})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"its {MANIFEST} does not name the {FORMAT} format"
    return None


def check_overwritable(path: Path) -> None:
    why = _is_qpass_save(path)
    if why is not None:
        raise FileExistsError(f"qpass.save: {path} exists and is not a qpass save ({why}); overwrite=True only "
                              "replaces a directory written by qpass.save, so it was left untouched")


def save(qmodel: torch.nn.Module, path: str | os.PathLike, *, example: torch.Tensor | None = None,
         overwrite: bool = False, tokenizer=None) -> Path:
    """Write `qmodel` (from qpass.compile) to directory `path`; returns it. Transactional: everything is
    written (and fsync'ed) into a temporary sibling directory that is then renamed into place, so a reader
    never sees a partial save (during an overwrite, for the instant between moving the old folder aside and
    renaming the new one in, it sees none), and a failure at any point leaves the previous save intact and
    no temporary directory behind.

    `overwrite=True` replaces `path` only when it is a qpass save (its manifest.json names the format);
    anything else there raises FileExistsError and is left alone. `example` (input_ids [batch, seq],
    optional) is what torch.export traces with; sizes below 2 are tiled up (the program stays dynamic).

    `tokenizer` (a Hugging Face tokenizer, optional) is saved into the directory too, and the model's
    `generation_config` always is when it has one, so `AutoTokenizer.from_pretrained(path)` and
    `GenerationConfig.from_pretrained(path)` work on it; both are hashed in the manifest (`extra_files`)."""
    from safetensors.torch import save_file

    import qpass

    path = Path(path)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"qpass.save: {path} exists (pass overwrite=True to replace it)")
        check_overwritable(path)  # before any work: never delete a folder that is not ours
    _check_tokenizer(tokenizer, "qpass.save")
    ep = export_program(qmodel, _example_for_export(example))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(path, "tmp")
    backup: Path | None = None  # the previous save, moved aside while the new one is renamed in
    try:
        _write_hf_files(qmodel, tmp, tokenizer, FILES + (MANIFEST,))
        (tmp / "recipe.json").write_text(qmodel.qpass_state.recipe.to_json())
        save_file(_program_tensors(ep), str(tmp / "weights.safetensors"), metadata={"format": FORMAT})
        _hollow(ep)  # the tensors live in weights.safetensors only
        ep._example_inputs = None  # no pickled sample inputs in the archive (load refuses any)
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
        for f in sorted(tmp.rglob("*"), reverse=True):  # files, then their folders, then tmp itself
            _fsync_file(f) if f.is_file() else _fsync_dir(f)
        _fsync_dir(tmp)
        if os.path.lexists(path):  # checked again: something may have appeared since the first check
            if not overwrite:
                raise FileExistsError(f"qpass.save: {path} exists (pass overwrite=True to replace it)")
            check_overwritable(path)
            backup = _new_sibling(path, "old")
            os.replace(path, backup)  # onto the empty directory reserved for it
        os.replace(tmp, path)
    except BaseException:
        if backup is not None and not os.path.lexists(path) and any(backup.iterdir()):
            os.rename(backup, path)  # put the previous save back (os.rename: independent of os.replace)
            backup = None
        shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None and not any(backup.iterdir()):
            backup.rmdir()  # reserved but never used
        raise
    try:
        _fsync_dir(path.parent)  # the renames themselves
    finally:
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)  # only now that the new save is in place
    return path


# ------------------------------------------------------------------------------------------------ loading
def _check(path: Path) -> dict:
    """Version, integrity and archive checks (see _check_files); reads nothing but JSON and raw bytes."""
    return _check_files(path)[0]


def _read(f: Path, what: str = "") -> bytes:
    try:
        if f.exists() and not f.is_file():  # a FIFO or device would block or never end
            raise LoadError(f"qpass.load: {f} is not a regular file")
        return f.read_bytes()
    except FileNotFoundError as e:
        raise LoadError(f"qpass.load: {f} is missing{what}") from e
    except OSError as e:
        raise LoadError(f"qpass.load: {f} cannot be read ({e})") from e


def _json(f: Path, data: bytes):
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LoadError(f"qpass.load: {f} is not valid JSON ({e})") from e


def _check_files(path: Path) -> tuple[dict, bytes]:
    """The manifest, then every file it lists (size, sha256), then the program archive's allow-list. Returns
    the manifest and the bytes of program.pt2 that were hashed and checked: those bytes, not the file (which
    could change in between), are what torch.export.load reads."""
    if not path.is_dir():
        raise LoadError(f"qpass.load: {path} is not a directory")
    mf = path / MANIFEST
    manifest = _json(mf, _read(mf, " (not a qpass save, or incomplete)"))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LoadError(f"qpass.load: {mf} is not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
        raise LoadError(
            f"qpass.load: {mf}: format version {manifest.get('format_version')!r} is not supported; "
            f"this qpass reads version {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise LoadError(f"qpass.load: {mf}: the manifest must list exactly {', '.join(FILES)}")
    extra = manifest.get("extra_files", {})  # tokenizer, generation_config.json (absent in older saves)
    if not isinstance(extra, dict):
        raise LoadError(f"qpass.load: {mf}: the manifest's extra_files must be a mapping")
    root = path.resolve()
    for name in extra:
        parts = Path(name).parts if isinstance(name, str) else ()
        inside = bool(parts) and not Path(name).is_absolute() and ".." not in parts
        try:  # a NUL byte or an over-long name make the OS refuse the path itself
            inside = inside and name not in FILES and name != MANIFEST and root in (root / name).resolve().parents
        except (ValueError, OSError):
            inside = False
        if not inside:
            raise LoadError(f"qpass.load: {mf}: the manifest lists {name!r}, which is not a file inside the saved directory")
    program = b""
    for name, meta in {**files, **extra}.items():
        if not isinstance(meta, dict):
            raise LoadError(f"qpass.load: {mf}: the manifest entry of {name!r} is not a mapping")
        f = path / name
        try:
            if not f.is_file():
                raise LoadError(f"qpass.load: {f} is missing")
            size = f.stat().st_size
            if size != meta.get("bytes"):
                raise LoadError(f"qpass.load: {f} has {size} bytes, the manifest says {meta.get('bytes')} (truncated or replaced)")
            if name == "program.pt2":
                program = f.read_bytes()
                digest = hashlib.sha256(program).hexdigest()
            else:
                digest = _sha256(f)
        except OSError as e:
            raise LoadError(f"qpass.load: {f} cannot be read ({e})") from e
        if digest != meta.get("sha256"):
            raise LoadError(f"qpass.load: {f} does not match its sha256 in the manifest (corrupted or tampered)")
    _check_archive(path / "program.pt2", program)
    return manifest, program


# What a qpass program.pt2 may hold (torch 2.13 archive layout, every name under one root folder). Anything
# else (opaque / custom-class / pickled constants, legacy .pt payloads, sample inputs, extra files, AOTI
# blobs, a second model) is refused before torch reads the archive.
_ARCHIVE_FIXED = {
    "archive_format": b"pt2",
    "archive_version": None,
    "byteorder": None,
    ".data/version": None,
    ".data/serialization_id": None,
    "models/model.json": None,
    "data/weights/model_weights_config.json": None,
    "data/constants/model_constants_config.json": None,
    "data/sample_inputs/model.pt": b"",  # must stay empty: torch unpickles it with a weights_only=False fallback
}
_ARCHIVE_REQUIRED = ("archive_format", "archive_version", "models/model.json",
                     "data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
_PAYLOAD_DIRS = {"data/weights/model_weights_config.json": ("data/weights/", re.compile(r"weight_[0-9]+")),
                 "data/constants/model_constants_config.json": ("data/constants/", re.compile(r"tensor_[0-9]+"))}
_PAYLOAD_META_KEYS = {"path_name", "is_param", "use_pickle", "tensor_meta"}
# node targets: ATen, qpass kernels, prims and the python operators / sym helpers torch.export emits
# (not operator.call / attrgetter / methodcaller, which would turn strings into attribute walks and calls)
_OPERATORS = ("getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge|and_|or_|xor|not_|"
              "invert|lshift|rshift")
_TARGET = re.compile(r"(torch\.ops\.(aten|qpass|prims)\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?"
                     rf"|_operator\.({_OPERATORS})|math\.(ceil|floor|trunc|sqrt|log2|exp|log)"
                     r"|torch\.sym_(not|float|int|max|min|ite|sum|sqrt)|torch\._sym_sqrt)")
# sympy expressions (torch's deserializer sympify()s them, which eval()s): only these names, no attribute
# access, no subscripts, only the quoted symbol names torch writes (s0, u1, ...)
_SYM_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|'[a-z]+[0-9]*'|[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|\*\*|[-+*/(),=<>!]=?")
_SYM_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "sqrt",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality", "And", "Or", "Not", "true", "false", "True", "False", "oo", "zoo", "nan",
    "Piecewise", "ITE", "floor", "ceiling", "positive", "negative", "integer", "nonnegative", "nonpositive",
    "real", "finite", "infinite", "zero", "nonzero", "even", "odd", "commutative",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
    "Identity", "OpaqueUnaryFn_exp", "OpaqueUnaryFn_log", "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "Max", "Min",
}
_SYM_SYMBOL = re.compile(r"[a-z]+[0-9]+")


def _check_sym_expr(pt2: Path, expr) -> None:
    if not isinstance(expr, str) or len(expr) > 4096:
        raise LoadError(f"qpass.load: {pt2} holds a malformed symbolic expression; refusing to evaluate it")
    pos = 0
    while pos < len(expr):
        m = _SYM_TOKEN.match(expr, pos)
        word = m.group(0) if m else expr[pos:pos + 20]
        if m is None or (word[0].isalpha() or word[0] == "_") and word not in _SYM_NAMES and not _SYM_SYMBOL.fullmatch(word):
            raise LoadError(f"qpass.load: {pt2} holds a symbolic expression with {word!r} ({expr[:80]!r}); torch "
                            "would eval() it, refusing to")
        pos = m.end()


def _check_program_json(pt2: Path, model: dict) -> None:
    """The serialized graph: no custom objects, no guard code, only allowed node targets, and symbolic
    expressions made of sympy arithmetic only."""
    if model.get("guards_code") not in ([], None):  # python source torch compiles into the module's guard fn
        raise LoadError(f"qpass.load: {pt2} carries guard code; refusing to compile it")
    stack = [model]
    while stack:
        o = stack.pop()
        if isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, dict):
            for k, v in o.items():
                if k in ("as_custom_obj", "custom_obj", "as_custom_objs") or (k == "custom_obj_values" and v):
                    raise LoadError(f"qpass.load: {pt2} references a custom object ({k}); refusing to load it")
                if k == "expr_str":
                    _check_sym_expr(pt2, v)
                elif k == "as_operator" and not (isinstance(v, str) and _TARGET.fullmatch(v)):  # a callable argument
                    raise LoadError(f"qpass.load: {pt2} passes the operator {v!r} as an argument; refusing to load it")
                elif k == "nodes" and isinstance(v, list):
                    for node in v:
                        target = node.get("target") if isinstance(node, dict) else None
                        if not isinstance(target, str) or not _TARGET.fullmatch(target):
                            raise LoadError(f"qpass.load: {pt2} calls {target!r}, which is not an operator a qpass "
                                            "program uses; refusing to load it")
                stack.append(v)


def _check_archive(pt2: Path, data: bytes) -> None:
    """Allow-list of program.pt2's entries, from the bytes torch will read. A qpass program holds the graph
    JSON, version files and hollow plain tensors (replaced from weights.safetensors): anything torch would
    unpickle or compile, or that a qpass program does not contain, is refused."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise LoadError(f"qpass.load: {pt2} is not a valid archive ({e})") from e
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):  # zipfile and torch's reader could pick different copies
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LoadError(f"qpass.load: {pt2} holds duplicate entries {dup[:3]}; refusing to load it")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not re.fullmatch(r"[A-Za-z0-9_.-]+", next(iter(roots), "")):
        raise LoadError(f"qpass.load: {pt2} is not a torch.export archive (entries under {sorted(roots)[:3]})")
    root = roots.pop() + "/"
    rel = {n[len(root):]: i for n, i in zip(names, infos) if n.startswith(root)}
    if len(rel) != len(names):
        raise LoadError(f"qpass.load: {pt2} has entries outside its root folder")
    payload_files = set()
    for name, info in rel.items():
        if name in _ARCHIVE_FIXED:
            continue
        if any(name.startswith(d) and rx.fullmatch(name[len(d):]) for d, rx in _PAYLOAD_DIRS.values()):
            payload_files.add(name)
            continue
        raise LoadError(f"qpass.load: {pt2} holds {root + name!r}, which a qpass program does not contain "
                        "(custom object, pickled payload or unknown entry); refusing to load it")
    for name in _ARCHIVE_REQUIRED:
        if name not in rel:
            raise LoadError(f"qpass.load: {pt2} lacks {root + name!r} (not a torch.export archive)")

    # torch reads the archive with its own zip reader (miniz): it must see exactly the entries checked above,
    # and the JSON checked below is read through it, so both readers cannot be told different stories
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        seen = list(reader.get_all_records())
    except Exception as e:  # noqa: BLE001  (RuntimeError from c10, or anything the binding raises)
        raise LoadError(f"qpass.load: {pt2} is not a valid archive ({e})") from e
    if len(seen) != len(set(seen)) or set(seen) != set(rel):
        raise LoadError(f"qpass.load: {pt2}: torch's zip reader sees other entries than the archive lists "
                        f"({sorted(set(seen) ^ set(rel))[:3]}); refusing to load it")

    def read(name: str) -> bytes:
        try:
            return bytes(reader.get_record(name))
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"qpass.load: {pt2}: entry {root + name!r} cannot be read ({e})") from e

    for name, expected in _ARCHIVE_FIXED.items():
        if expected is not None and name in rel and read(name) != expected:
            what = "serialized sample inputs; refusing to unpickle them" if expected == b"" else f"not {expected!r}"
            raise LoadError(f"qpass.load: {pt2}: {root + name!r} holds {what}")
    used = set()
    for cfg_name, (folder, path_rx) in _PAYLOAD_DIRS.items():
        cfg = _json(pt2, read(cfg_name))
        entries = cfg.get("config") if isinstance(cfg, dict) and set(cfg) == {"config"} else None
        if not isinstance(entries, dict):
            raise LoadError(f"qpass.load: {pt2}: {root + cfg_name!r} is not a payload config")
        for fqn, meta in entries.items():
            if not isinstance(meta, dict) or not set(meta) <= _PAYLOAD_META_KEYS:
                raise LoadError(f"qpass.load: {pt2}: {root + cfg_name!r} entry {fqn!r} is malformed")
            if meta.get("use_pickle") is not False:  # tensor subclasses, pickled tensors: torch.load(weights_only=False)
                raise LoadError(f"qpass.load: {pt2} stores {fqn!r} pickled (use_pickle); refusing to unpickle it")
            p = meta.get("path_name")
            if not isinstance(p, str) or not path_rx.fullmatch(p):  # opaque_obj_*, custom_obj_*: pickle / torchbind
                raise LoadError(f"qpass.load: {pt2} stores {fqn!r} as {p!r}, not a plain tensor "
                                "(custom or opaque object); refusing to load it")
            if folder + p not in rel:
                raise LoadError(f"qpass.load: {pt2} lacks the payload {root + folder + p!r} of {fqn!r}")
            if not isinstance(meta.get("tensor_meta"), dict):
                raise LoadError(f"qpass.load: {pt2}: {fqn!r} has no tensor metadata")
            used.add(folder + p)
    if payload_files - used:
        raise LoadError(f"qpass.load: {pt2} holds unreferenced payloads {sorted(payload_files - used)[:3]}")
    model = _json(pt2, read("models/model.json"))
    if not isinstance(model, dict):
        raise LoadError(f"qpass.load: {pt2}: the program JSON is not an object")
    _check_program_json(pt2, model)


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
    """Load a directory written by qpass.save. Every failure (unknown format version; a missing, truncated,
    corrupted or tampered file; an archive entry outside the allow-list; unreadable JSON, archive or
    safetensors; a program torch cannot load; tensors that do not match the program) raises LoadError, naming
    the file and the reason, and loads nothing. Nothing is unpickled and no code from the folder runs.

    A compressed-tensors folder (config.json with a compressed-tensors `quantization_config`, no manifest.json)
    is imported with `qpass.from_compressed_tensors(path)` instead (its own checks and errors; docs/export.md)."""
    from .import_compressed import from_compressed_tensors, is_compressed_tensors_folder

    if not (Path(path) / MANIFEST).exists() and is_compressed_tensors_folder(path):
        return from_compressed_tensors(path, device=device or "cpu")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    import qpass.kernels.ops  # noqa: F401  (registers the qpass:: kernel ops the program calls)

    path = Path(path)
    manifest, program = _check_files(path)
    recipe_file = path / "recipe.json"
    recipe = _json(recipe_file, _read(recipe_file))
    weights = path / "weights.safetensors"
    try:
        tensors = load_file(str(weights))  # memory-mapped; a change after the hash check can only swap tensors
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError) as e:
        raise LoadError(f"qpass.load: {weights} is not a readable safetensors file ({e})") from e
    pt2 = path / "program.pt2"
    try:
        with warnings.catch_warnings():  # the program's tensors are hollow on purpose (see _hollow)
            warnings.filterwarnings("ignore", message="No complete tensor found")
            ep = torch.export.load(io.BytesIO(program))  # the checked bytes, not the file again
    except Exception as e:  # noqa: BLE001  (torch raises anything from AssertionError to KeyError here)
        raise LoadError(f"qpass.load: {pt2} cannot be loaded by torch.export.load ({type(e).__name__}: {e})") from e
    expected = {k for store in (ep.state_dict, ep.constants) for k, v in store.items() if isinstance(v, torch.Tensor)}
    if set(tensors) != expected:
        missing, unknown = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise LoadError(f"qpass.load: {weights} does not hold the program's tensors "
                        f"(missing {missing[:3]}, unknown {unknown[:3]})")
    for store in (ep.state_dict, ep.constants):
        for k in list(store):
            if isinstance(store[k], torch.Tensor):
                t, want = tensors[k], store[k]
                if t.shape != want.shape or t.dtype != want.dtype:
                    raise LoadError(f"qpass.load: {weights}: tensor {k!r} is {t.dtype} {tuple(t.shape)}, the program "
                                    f"in {pt2.name} wants {want.dtype} {tuple(want.shape)}")
                if device is not None:
                    t = t.to(device)
                store[k] = torch.nn.Parameter(t, requires_grad=False) if isinstance(want, torch.nn.Parameter) else t
    try:
        module = ep.module()
        if device is not None:
            module.to(device)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"qpass.load: {pt2}: the program cannot be turned into a module ({type(e).__name__}: {e})") from e
    return LoadedModel(module, manifest, recipe)

