"""Property tests: corrupted and hostile save folders (docs/export.md). One tiny model is saved per module; each
generated case copies the folder, mutates it, and calls qpass.load: a mutation of checked content must raise
qpass.LoadError (nothing else: no KeyError, no zipfile error, no hang); a mutation that touches nothing the
manifest checks must load and give the original logits."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import qpass
from qpass.export import LoadError
from tiny_models import tiny_model


from prop_util import n, no_hang  # noqa: E402


IDS = torch.tensor([[1, 5, 9, 33, 2, 200, 17, 4]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    q = qpass.compile(tiny_model("llama"), "w8a8", progress=False)
    d = tmp_path_factory.mktemp("prop_save") / "tiny"
    qpass.save(q, d)
    with torch.no_grad():
        want = qpass.load(d)(IDS)
        ref = q(IDS).logits
    torch.testing.assert_close(want, ref, rtol=1e-4, atol=1e-4)
    work = tmp_path_factory.mktemp("prop_cases")
    outside = tmp_path_factory.mktemp("prop_outside")
    return d, want, work, outside


def _copy(saved) -> Path:
    d, _, work, _ = saved
    dst = Path(tempfile.mkdtemp(dir=work)) / "m"
    shutil.copytree(d, dst, symlinks=True)
    return dst


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, m) -> None:
    (d / "manifest.json").write_text(json.dumps(m))


def _rehash(d: Path, name: str, key: str = "files") -> None:
    m = _manifest(d)
    f = d / name
    m[key][name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    _write_manifest(d, m)


def _must_fail(d: Path, what, seconds: int = 60) -> None:
    with no_hang(seconds):
        try:
            m = qpass.load(d)
        except LoadError:
            return
    pytest.fail(f"qpass.load accepted a folder with {what!r} (returned {type(m).__name__})")


def _fail_or_same(d: Path, want: torch.Tensor, what) -> None:
    with no_hang(120):
        try:
            m = qpass.load(d)
        except LoadError:
            return
        with torch.no_grad():
            got = m(IDS)
    torch.testing.assert_close(got, want, rtol=0, atol=0, msg=lambda s: f"{what!r}: loaded, but {s}")


def _loads_same(d: Path, want: torch.Tensor, what) -> None:
    with no_hang(120):
        m = qpass.load(d)
        with torch.no_grad():
            got = m(IDS)
    torch.testing.assert_close(got, want, rtol=0, atol=0, msg=lambda s: f"{what!r}: {s}")


CHECKED = ["manifest.json", "recipe.json", "weights.safetensors", "program.pt2", "generation_config.json"]
garbage_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
outside_names = st.sampled_from(["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "..", ".", "",
                                 "sub/../../m2/recipe.json", "./../m/recipe.json", "\x00", "manifest.json",
                                 "program.pt2", "a" * 300, "~/x", "C:\\x", "//x"])


# --------------------------------------------------------------------------------------------- mutations
@st.composite
def hostile(draw):
    """A mutation that changes content the manifest checks (or the manifest itself, invalidly)."""
    kind = draw(st.sampled_from(["truncate", "flip", "delete", "rename", "swap", "dir_instead", "manifest_bytes",
                                 "manifest_json", "manifest_field", "extra_outside", "symlink_outside_extra",
                                 "empty_file", "append"]))
    f = draw(st.sampled_from(CHECKED))
    return kind, f, draw(st.integers(0, 2**31 - 1)), draw(st.binary(min_size=1, max_size=40)), draw(garbage_json), \
        draw(outside_names), draw(st.sampled_from(["format", "format_version", "files", "extra_files", "files.f",
                                                   "files.f.sha256", "files.f.bytes", "extra.f", "extra.f.sha256",
                                                   "extra.f.bytes"]))


def _apply_hostile(d: Path, case, outside: Path):
    kind, f, r, blob, junk, oname, field = case
    p = d / f
    size = p.stat().st_size
    if kind == "truncate":
        p.write_bytes(p.read_bytes()[: r % size])
    elif kind == "flip":
        data = bytearray(p.read_bytes())
        data[r % size] ^= (blob[0] or 1)
        p.write_bytes(bytes(data))
    elif kind == "delete":
        p.unlink()
    elif kind == "rename":
        p.rename(d / (f + ".bak"))
    elif kind == "swap":
        other = d / CHECKED[(CHECKED.index(f) + 1 + r % (len(CHECKED) - 1)) % len(CHECKED)]
        tmp = d / "tmp.swap"
        p.rename(tmp)
        other.rename(p)
        tmp.rename(other)
    elif kind == "dir_instead":
        p.unlink()
        p.mkdir()
        (p / "x").write_bytes(blob)
    elif kind == "manifest_bytes":
        (d / "manifest.json").write_bytes(blob)
    elif kind == "manifest_json":
        (d / "manifest.json").write_text(json.dumps(junk))
    elif kind == "manifest_field":
        m = _manifest(d)
        names = {"files": "weights.safetensors", "extra": "generation_config.json"}
        parts = field.split(".")
        if parts[0] in ("format", "format_version", "files", "extra_files"):
            assume(junk != m[parts[0]])
            m[parts[0]] = junk
        else:
            top = "files" if parts[0] == "files" else "extra_files"
            name = names[parts[0]]
            if len(parts) == 2:
                assume(junk != m[top][name])
                m[top][name] = junk
            else:
                assume(junk != m[top][name][parts[2]])
                m[top][name][parts[2]] = junk
        _write_manifest(d, m)
    elif kind == "extra_outside":  # a manifest entry that points outside the folder (or at a format file)
        target = outside / "secret.txt"
        target.write_bytes(blob)
        m = _manifest(d)
        m["extra_files"][oname] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        _write_manifest(d, m)
    elif kind == "symlink_outside_extra":  # a listed file that is a symlink to a file outside, correctly hashed
        target = outside / f"t{r}.json"
        target.write_bytes(blob)
        link = d / ("tok.json" if r % 2 else "sub/tok.json")
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(target)
        m = _manifest(d)
        m["extra_files"][link.relative_to(d).as_posix()] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        _write_manifest(d, m)
    elif kind == "empty_file":
        p.write_bytes(b"")
    elif kind == "append":
        with open(p, "ab") as fh:
            fh.write(blob)
    return kind


@settings(max_examples=n(250))
@given(hostile())
def test_hostile_mutation_is_load_error(saved, case):
    d = _copy(saved)
    try:
        what = _apply_hostile(d, case, saved[3])
        _must_fail(d, case[:2] + (what,))
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


# ------------------------------------------------------------------------ re-hashed archive / file tampering
def _pt2_entries(d: Path):
    with zipfile.ZipFile(d / "program.pt2") as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def _write_pt2(d: Path, entries) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    (d / "program.pt2").write_bytes(buf.getvalue())
    _rehash(d, "program.pt2")


class _Touch:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@st.composite
def archive_tamper(draw):
    kind = draw(st.sampled_from(["add_entry", "add_outside_root", "duplicate", "sample_inputs", "pickle_weight",
                                 "bad_target", "guard_code", "custom_obj", "sym_expr", "drop_entry", "model_json_garbage",
                                 "config_garbage", "not_zip"]))
    return kind, draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_./-", min_size=1, max_size=20)), \
        draw(st.binary(max_size=30)), draw(garbage_json), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=n(100))
@given(archive_tamper())
def test_rehashed_archive_tampering_is_load_error(saved, case):
    """An attacker who rewrites program.pt2 and re-hashes the manifest: refused before anything is unpickled."""
    kind, name, blob, junk, r = case
    d = _copy(saved)
    marker = saved[3] / f"pwned-{r}"
    try:
        entries = _pt2_entries(d)
        root = entries[0][0].split("/", 1)[0]
        names = [e[0] for e in entries]
        if kind == "add_entry":
            assume(f"{root}/{name}" not in names)
            entries.append((f"{root}/{name}", blob))
        elif kind == "add_outside_root":
            entries.append((f"other{name}", blob))
        elif kind == "duplicate":
            entries.append(entries[r % len(entries)])
        elif kind == "sample_inputs":
            entries = [(k, v) for k, v in entries if not k.endswith("data/sample_inputs/model.pt")]
            entries.append((f"{root}/data/sample_inputs/model.pt", pickle.dumps(_Touch(marker))))
        elif kind in ("pickle_weight", "config_garbage"):
            cfgs = [k for k, v in entries if k.endswith("_config.json") and json.loads(v).get("config")]
            k = cfgs[r % len(cfgs)] if cfgs else next(k for k, _ in entries if k.endswith("model_weights_config.json"))
            i = names.index(k)
            cfg = json.loads(entries[i][1])
            assume(kind == "config_garbage" or cfg.get("config"))
            if kind == "pickle_weight":
                fqn = sorted(cfg["config"])[r % len(cfg["config"])]
                cfg["config"][fqn]["use_pickle"] = True
            else:
                cfg = junk
            entries[i] = (k, json.dumps(cfg).encode())
        elif kind in ("bad_target", "guard_code", "custom_obj", "sym_expr", "model_json_garbage"):
            k = next(k for k, _ in entries if k.endswith("models/model.json"))
            i = names.index(k)
            model = json.loads(entries[i][1])
            if kind == "bad_target":
                nodes = model["graph_module"]["graph"]["nodes"]
                nodes[r % len(nodes)]["target"] = draw_target(r, name)
            elif kind == "guard_code":
                model["guards_code"] = [f"__import__('os').system('touch {marker}')"]
            elif kind == "custom_obj":
                model["graph_module"]["graph"].setdefault("custom_obj_values", {})["x"] = {"class_fqn": "os.system"}
            elif kind == "sym_expr":
                model["graph_module"]["graph"].setdefault("sym_int_values", {})["s99"] = {
                    "as_expr": {"expr_str": f"__import__('os').system('touch {marker}')", "hint": None}}
            else:
                model = junk
            entries[i] = (k, json.dumps(model).encode())
        elif kind == "drop_entry":
            entries.pop(r % len(entries))
        elif kind == "not_zip":
            (d / "program.pt2").write_bytes(blob)
            _rehash(d, "program.pt2")
        if kind != "not_zip":
            _write_pt2(d, entries)
        _must_fail(d, (kind, name))
        assert not marker.exists(), "code from the folder ran"
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


def draw_target(r: int, name: str) -> str:
    return ["builtins.eval", "os.system", "torch.ops.aten.add.Tensor.x.y", "subprocess.Popen", name,
            "torch.ops.qpass.w4a16_linear.default; import os", "torch.load"][r % 7]


@st.composite
def rehashed_other(draw):
    f = draw(st.sampled_from(["weights.safetensors", "generation_config.json", "recipe.json"]))
    kind = draw(st.sampled_from(["truncate", "header_garbage", "json_garbage", "empty"]))
    return f, kind, draw(st.integers(0, 2**31 - 1)), draw(st.binary(min_size=1, max_size=30)), draw(garbage_json)


@settings(max_examples=n(16))
@given(rehashed_other())
def test_rehashed_unreadable_files(saved, case):
    """Re-hashed weights / recipe / generation config that cannot be read as what they are: LoadError, or (for
    files load does not read as data, e.g. generation_config.json, or valid JSON in recipe.json) the original
    logits."""
    f, kind, r, blob, junk = case
    d = _copy(saved)
    try:
        p = d / f
        data = p.read_bytes()
        if kind == "truncate":
            p.write_bytes(data[: r % len(data)])
        elif kind == "header_garbage":
            p.write_bytes(data[:8] + blob + data[8 + len(blob):])
        elif kind == "json_garbage":
            p.write_bytes(json.dumps(junk).encode())
        else:
            p.write_bytes(b"")
        _rehash(d, f, "extra_files" if f == "generation_config.json" else "files")
        if f == "weights.safetensors":
            _must_fail(d, case[:2])
        else:
            _fail_or_same(d, saved[1], case[:2])
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


# ------------------------------------------------------------------------------------------ benign mutations
@st.composite
def benign(draw):
    kind = draw(st.sampled_from(["extra_file", "extra_dir_file", "extra_symlink_outside", "dangling_symlink",
                                 "manifest_reformat"]))
    return kind, draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)), \
        draw(st.binary(max_size=64))


@settings(max_examples=n(5))
@given(benign())
def test_unchecked_additions_load_and_match(saved, case):
    """Files added after the save and not in the manifest are neither checked nor read: the model loads and
    gives the original logits."""
    kind, name, blob = case
    d = _copy(saved)
    assume(not (d / name).exists() and name not in CHECKED)
    try:
        if kind == "extra_file":
            (d / name).write_bytes(blob)
        elif kind == "extra_dir_file":
            (d / "sub").mkdir()
            (d / "sub" / name).write_bytes(blob)
        elif kind == "extra_symlink_outside":
            t = saved[3] / f"o-{name}"
            t.write_bytes(blob)
            (d / name).symlink_to(t)
        elif kind == "dangling_symlink":
            (d / name).symlink_to(saved[3] / "does-not-exist")
        else:
            m = _manifest(d)
            (d / "manifest.json").write_text(json.dumps(dict(reversed(list(m.items()))), indent=None))
        _loads_same(d, saved[1], case[0])
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


@settings(max_examples=n(4))
@given(st.sampled_from(["recipe.json", "weights.safetensors", "program.pt2", "generation_config.json"]))
def test_symlinked_listed_file(saved, f):
    """A listed file replaced by a symlink (inside or outside the folder) to identical bytes: LoadError or the
    original logits — never anything else."""
    d = _copy(saved)
    try:
        t = saved[3] / f"copy-{f}"
        shutil.copyfile(d / f, t)
        (d / f).unlink()
        (d / f).symlink_to(t)
        _fail_or_same(d, saved[1], ("symlink", f))
    finally:
        shutil.rmtree(d.parent, ignore_errors=True)


@settings(max_examples=n(4))
@given(st.one_of(st.just("missing"), st.just("file"), st.just("empty_dir"), st.just("fifo_manifest")))
def test_not_a_save_folder(saved, kind):
    work = Path(tempfile.mkdtemp(dir=saved[2]))
    try:
        p = work / "x"
        if kind == "file":
            p.write_bytes(b"not a folder")
        elif kind == "empty_dir":
            p.mkdir()
        elif kind == "fifo_manifest":
            p.mkdir()
            os.mkfifo(p / "manifest.json")
        _must_fail(p, kind, seconds=5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
