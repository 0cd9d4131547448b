"""Property tests: `qpass.cli.main` in-process on generated argv (docs/cli.md). A bad argument exits with status 2
and prints exactly one line `qpass…error: …` on stderr — never a traceback, and never after the model is loaded
(`qpass.models.load` is patched to raise if reached). Good arguments reach the model load."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qpass.cli as cli
import qpass.models


from prop_util import n  # noqa: E402


class ModelLoaded(BaseException):
    """Raised by the patched models.load: the CLI got past its checks (BaseException: nothing may swallow it)."""


def _no_model(*a, **k):
    raise ModelLoaded()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Paths of every kind the flags can point at."""
    base = tmp_path_factory.mktemp("cli")
    (base / "exists").mkdir()
    (base / "file.txt").write_text("x")
    (base / "bad.yaml").write_text("weights: {bits: five}\n")
    (base / "unknown.yaml").write_text("weights: {group_sze: 64}\n")
    (base / "ctrl.yaml").write_text("weights: {bits: 4}\n\x1f\n")
    (base / "notyaml.yaml").write_text("weights: [\n")
    (base / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 10) + "]\n" for i in range(1, 8)))
    (base / "bad.json").write_text('{"weights": {"bits": 4}, "weights": {"bits": 8}}')
    (base / "huge.json").write_text('{"weights": {"clip_ratio": 1' + "0" * 400 + "}}")
    (base / "good.yaml").write_text("weights: {bits: 4, group_size: 64}\n")
    (base / "model_noconfig").mkdir()
    (base / "notsave").mkdir()
    (base / "notsave" / "manifest.json").write_text("{}")
    return base


BAD_INT = st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["abc", "1.5", "", "0x10", "1e3", "--", " ", "-1"]))


@st.composite
def bad_argv(draw, base: Path, parse_errors: bool = True):
    """argv with at least one error the CLI must catch before loading a model; the rest may be valid.
    parse_errors=False: only errors past argparse (qpass's own checks)."""
    cmd = draw(st.sampled_from(["quantize", "eval", "recipes", "", "nope", "--bogus"] if parse_errors else
                               ["quantize", "eval", "recipes"]))
    bad_int = BAD_INT if parse_errors else st.integers(max_value=0).map(str)
    if cmd in ("", "nope", "--bogus"):
        return [cmd] if cmd else [], "parse"
    if cmd == "recipes":
        return ["recipes", draw(st.sampled_from(["nope", "W8A8", "w4a16 ", "../w8a8", "\x00"]))] + \
            draw(st.sampled_from([[], ["--json"]])), "check"
    argv = [cmd]
    errors = draw(st.lists(st.sampled_from(
        ["recipe_bad", "recipe_missing", "eval_tokens", "seq_len", "threads", "calib_samples", "model_missing",
         "model_noconfig"] + (["unknown_flag", "bad_choice"] if parse_errors else [])
        + (["overwrite_alone", "save_exists", "ct_exists", "plot_missing"] if cmd == "quantize" else
           ["load_missing", "load_notsave", "load_and_recipe"])), min_size=1, max_size=3, unique=True))
    parse_level = False
    for e in errors:
        if e == "recipe_bad":
            argv += ["--recipe", str(base / draw(st.sampled_from(
                ["bad.yaml", "unknown.yaml", "ctrl.yaml", "notyaml.yaml", "bomb.yaml", "bad.json", "huge.json",
                 "file.txt"])))]
        elif e == "recipe_missing":
            argv += ["--recipe", draw(st.sampled_from(["nope", str(base / "missing.yaml"), "W4A16", "w4a16 "]))]
        elif e == "eval_tokens":  # 0 means "the whole text": bad is below 0
            v = draw(bad_int.filter(lambda x: x != "0"))
            argv += [f"--eval-tokens={v}"]
            parse_level |= not v.lstrip("-").isdigit()
        elif e == "seq_len":
            v = draw(st.one_of(st.integers(max_value=1).map(str), st.sampled_from(["x", "2.0"] if parse_errors else ["1"])))
            argv += [f"--seq-len={v}"]
            parse_level |= not v.lstrip("-").isdigit()
        elif e == "threads":
            v = draw(bad_int)
            argv += [f"--threads={v}"]
            parse_level |= not v.lstrip("-").isdigit()
        elif e == "calib_samples":
            v = draw(bad_int)
            argv += [f"--calib-samples={v}"]
            parse_level |= not v.lstrip("-").isdigit()
        elif e == "unknown_flag":
            argv += [draw(st.sampled_from(["--recipes", "--sav", "-x", "--json=1", "extra_positional"]))]
            parse_level = True
        elif e == "bad_choice":
            argv += [draw(st.sampled_from(["--eval-novel", "--calib-novel"])), draw(st.sampled_from(["moby", "", "EMMA"]))]
            parse_level = True
        elif e == "model_missing":
            argv += ["--model", str(base / "no-such-model")]
        elif e == "model_noconfig":
            argv += ["--model", str(base / "model_noconfig")]
        elif e == "overwrite_alone":
            argv += ["--overwrite"]
        elif e == "save_exists":
            argv += ["--save", str(base / draw(st.sampled_from(["exists", "file.txt"])))]
        elif e == "ct_exists":
            argv += ["--compressed-tensors", str(base / "exists")]
        elif e == "plot_missing":
            argv += ["--plot", str(base / "no" / "such" / "p.png")]
        elif e == "load_missing":
            argv += ["--load", str(base / "no-such-save")]
        elif e == "load_notsave":
            argv += ["--load", str(base / draw(st.sampled_from(["exists", "file.txt"])))]
        elif e == "load_and_recipe":
            argv += ["--load", str(base / "notsave"), "--recipe", "w8a8"]
    if draw(st.booleans()):
        argv.append("--json")
    if draw(st.booleans()):
        argv += ["--cache-dir", str(base / "cache")]
    order = draw(st.permutations(range(1, len(argv))))
    return [argv[0]] + [argv[i] for i in order] if not _has_pairs(argv) else argv, "parse" if parse_level else "check"


def _has_pairs(argv) -> bool:
    return any(a.startswith("--") and "=" not in a for a in argv[1:])  # flag + value pairs: keep the order


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(qpass.models, "load", _no_model), mock.patch("torch.set_num_threads", lambda t: None):
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _one_error_line(rc, out, err, argv) -> None:
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"{argv}: stderr has {len(lines)} lines: {err!r}"
    assert lines[0].startswith("qpass") and "error:" in lines[0], lines[0]


@settings(max_examples=n(300))
@given(st.data())
def test_bad_arguments_exit_2_with_one_line(places, data):
    argv, level = data.draw(bad_argv(places))
    try:
        rc, out, err = _run(argv)
    except ModelLoaded:
        pytest.fail(f"{argv}: the model was loaded although an argument is bad")
    _one_error_line(rc, out, err, argv)
    if "--json" in argv and level == "check" and argv and argv[0] in ("quantize", "eval", "recipes"):
        doc = json.loads(out)
        assert set(doc) == {"error", "error_type"} and doc["error_type"] in (
            "RecipeError", "LoadError", "ValueError", "FileNotFoundError", "FileExistsError")


@settings(max_examples=n(150))
@given(st.data())
def test_check_level_errors_exit_2_with_one_line(places, data):
    """Only errors past argparse (qpass's own checks): exit 2 and one `qpass: error:` line."""
    argv, level = data.draw(bad_argv(places, parse_errors=False))
    assert level == "check"
    try:
        rc, out, err = _run(argv)
    except ModelLoaded:
        pytest.fail(f"{argv}: the model was loaded although an argument is bad")
    _one_error_line(rc, out, err, argv)
    assert err.startswith("qpass: error: ")


@settings(max_examples=n(40))
@given(st.sampled_from(["quantize", "eval"]),
       st.sampled_from(["w8a8", "w4a16", "ternary", "good.yaml"]),
       st.integers(1, 10**6), st.integers(2, 4096), st.integers(1, 8), st.booleans(), st.booleans())
def test_good_arguments_reach_the_model(places, cmd, recipe, tokens, seq, threads, as_json, save):
    """Valid arguments pass every check and reach the model load (patched) — no false refusal."""
    recipe = str(places / recipe) if recipe.endswith(".yaml") else recipe
    argv = [cmd, "--recipe", recipe, "--eval-tokens", str(tokens), "--seq-len", str(seq), "--threads", str(threads)]
    if as_json:
        argv.append("--json")
    if save and cmd == "quantize":
        argv += ["--save", str(Path(tempfile.mkdtemp(dir=places)) / "new"), "--overwrite"]
    with pytest.raises(ModelLoaded):
        _run(argv)


@settings(max_examples=n(20))
@given(st.sampled_from(sorted(__import__("qpass").recipes())), st.booleans())
def test_recipes_command(name, as_json):
    rc, out, err = _run(["recipes", name] + (["--json"] if as_json else []))
    assert rc == 0 and err == ""
    if as_json:
        assert json.loads(out)["name"] == name
    else:
        assert f"name: {name}" in out


@pytest.mark.parametrize("cmd", ["quantize", "eval"])
def test_empty_recipe_is_refused(cmd):
    """`--recipe ""` is no preset and no file: refused before the model load like any unknown name."""
    try:
        rc, out, err = _run([cmd, "--recipe", ""])
    except ModelLoaded:
        pytest.fail(f"{cmd} --recipe '': the model was loaded")
    _one_error_line(rc, out, err, [cmd, "--recipe", ""])


BAD_RECIPE_FILES = ["bad.yaml", "unknown.yaml", "ctrl.yaml", "notyaml.yaml", "bomb.yaml", "bad.json", "huge.json",
                    "file.txt"]


@settings(max_examples=n(30))
@given(st.sampled_from(BAD_RECIPE_FILES), st.sampled_from(["quantize", "eval"]), st.booleans())
def test_bad_recipe_files_exit_2(places, name, cmd, as_json):
    """Every malformed recipe file (bad value, unknown key, control character, broken YAML, alias bomb, duplicate
    JSON key, a number too large for a float, not a recipe at all): exit 2, one line, no model load."""
    argv = [cmd, "--recipe", str(places / name)] + (["--json"] if as_json else [])
    try:
        rc, out, err = _run(argv)
    except ModelLoaded:
        pytest.fail(f"{argv}: the model was loaded")
    _one_error_line(rc, out, err, argv)
    assert err.startswith("qpass: error: ")
