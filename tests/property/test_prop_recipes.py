"""Property tests: recipes (docs/recipes.md). Every generated recipe either validates and round-trips through
to_dict / to_json / YAML / from_dict unchanged, or raises qpass.RecipeError naming the offending key path —
never another exception, never a hang (nested YAML aliases included)."""
from __future__ import annotations

import copy
import json
import math
import os

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import qpass
from qpass.recipe import RecipeError, resolve


from prop_util import n, no_hang  # noqa: E402


# ------------------------------------------------------------------------------------------- valid recipes
BITS = [2, 3, 4, 8]
unit_open_closed = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)  # (0, 1]
ignore_globs = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.*0123456789", min_size=1, max_size=12)


@st.composite
def weight_specs(draw):
    d = {}
    if draw(st.booleans()):
        d["bits"] = draw(st.sampled_from(BITS))
    if draw(st.booleans()):
        d["group_size"] = draw(st.one_of(st.none(), st.integers(1, 4096), st.just(10**30)))
    if draw(st.booleans()):
        d["symmetric"] = draw(st.booleans())
    if draw(st.booleans()):
        d["rounding"] = draw(st.sampled_from(["rtn", "gptq"]))
    if draw(st.booleans()):
        d["clip_ratio"] = draw(unit_open_closed)
    if draw(st.booleans()):
        d["gptq_damp"] = draw(st.floats(min_value=1e-6, max_value=0.999, allow_nan=False))
    if draw(st.booleans()):
        d["gptq_block"] = draw(st.integers(1, 1024))
    if draw(st.booleans()):
        d["gptq_act_order"] = draw(st.booleans())
    return d


@st.composite
def activation_specs(draw):
    d = {}
    per_channel = draw(st.booleans())
    if per_channel or draw(st.booleans()):
        d["granularity"] = "per_channel" if per_channel else "per_token"
    if per_channel and draw(st.booleans()):
        d["observer"] = draw(st.sampled_from(["absmax", "minmax", "percentile"]))
    elif draw(st.booleans()):
        d["observer"] = "absmax"
    if draw(st.booleans()):
        d["bits"] = draw(st.sampled_from(BITS))
    if draw(st.booleans()):
        d["symmetric"] = draw(st.booleans())
    if draw(st.booleans()):
        d["percentile"] = draw(st.floats(min_value=1e-3, max_value=100.0, allow_nan=False))
    if draw(st.booleans()):
        d["clip_ratio"] = draw(unit_open_closed)
    return d


@st.composite
def calibration_specs(draw):
    d = {}
    seq_len = draw(st.integers(2, 100_000))
    if draw(st.booleans()):
        d["seq_len"] = seq_len
    else:
        seq_len = 512
    if draw(st.booleans()):
        d["num_samples"] = draw(st.integers(1, 10**6))
    skip = draw(st.integers(0, min(seq_len - 1, 8)))
    if skip or draw(st.booleans()):
        d["skip_tokens"] = skip
    if skip and draw(st.booleans()):
        d["sink_hessian_weight"] = draw(st.floats(min_value=0, max_value=1, allow_nan=False))
    return d


pass_specs = st.one_of(
    st.just({"name": "trit_planes"}),
    st.builds(lambda g, it: {"name": "trit_planes", "group_size": g, "max_iter": it},
              st.integers(1, 256), st.integers(1, 100)),
    st.builds(lambda a: {"name": "trit_planes", "options": {"tol": a}}, st.floats(0, 1, allow_nan=False)),
)


@st.composite
def valid_recipes(draw):
    d = {}
    if draw(st.booleans()):
        d["name"] = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20))
    if draw(st.booleans()):
        d["version"] = 1
    weights = draw(st.one_of(st.none(), weight_specs()))
    acts = draw(st.one_of(st.none(), activation_specs()))
    passes = draw(st.lists(pass_specs, max_size=2))
    if weights is None and acts is None and not passes:
        weights = {}
    if weights is not None or draw(st.booleans()):
        d["weights"] = weights
    if acts is not None or draw(st.booleans()):
        d["activations"] = acts
    if passes or draw(st.booleans()):
        d["passes"] = passes
    if draw(st.booleans()):
        d["ignore"] = draw(st.one_of(ignore_globs, st.lists(ignore_globs, max_size=4)))
    if draw(st.booleans()):
        d["calibration"] = draw(calibration_specs())
    return d


def _same_as_given(given: dict, out: dict) -> None:
    """Every value the generated dict set is in the built recipe (ints/floats as given, ignore normalized)."""
    for key, val in given.items():
        if key == "ignore":
            assert out["ignore"] == ([val] if isinstance(val, str) else val)
        elif key == "passes":
            assert [p["name"] for p in out["passes"]] == [p["name"] for p in val]
        elif isinstance(val, dict):
            for k, v in val.items():
                assert out[key][k] == v, (key, k)
        else:
            assert out[key] == val, key


@settings(max_examples=n(300))
@given(valid_recipes())
def test_valid_recipe_round_trips(d):
    r = qpass.Recipe.from_dict(copy.deepcopy(d))
    out = r.to_dict()
    _same_as_given(d, out)
    assert json.loads(r.to_json()) == out
    again = qpass.Recipe.from_dict(json.loads(r.to_json()))
    assert again.to_dict() == out
    assert qpass.Recipe.from_dict(copy.deepcopy(out)).to_dict() == out
    assert resolve(d).to_dict() == out  # the dict path of resolve (through the same validator)
    assert resolve(r).to_dict() == out
    assert yaml.safe_load(r.to_yaml()) == out


@settings(max_examples=n(60))
@given(valid_recipes(), st.sampled_from([".yaml", ".yml", ".json"]))
def test_valid_recipe_file_round_trips(tmp_path_factory, d, ext):
    r = qpass.Recipe.from_dict(copy.deepcopy(d))
    path = tmp_path_factory.mktemp("recipe") / f"r{ext}"
    r.save(path)
    with no_hang(20):
        assert resolve(str(path)).to_dict() == r.to_dict()
        assert qpass.Recipe.from_file(path).to_dict() == r.to_dict()


# ----------------------------------------------------------------------------------------- invalid recipes
# (key path, a value that is wrong there). Values are wrong for the field itself, so the error must be raised
# at that path whatever the rest of the recipe holds.
garbage = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
huge = st.one_of(st.just(10**400), st.just(-(10**400)), st.just(2**64), st.just(1e308), st.just(-1e308),
                 st.just(float("inf")), st.just(float("-inf")), st.just(float("nan")))

huge_not_int = huge.filter(lambda v: not (type(v) is int and v > 0))  # a huge positive int is fine for [1, inf)


def not_int(v) -> bool:
    return type(v) is not int


def _bad(field_kind: str):
    """Values that a field of this kind must refuse."""
    if field_kind == "bits":
        return st.one_of(st.integers().filter(lambda v: v not in BITS), st.sampled_from(["four", "4", 4.0, True, None, [4]]),
                         huge, garbage.filter(lambda v: v not in BITS or type(v) is not int))
    if field_kind == "pos_int_or_null":  # group_size
        return st.one_of(st.integers(max_value=0), st.sampled_from(["64", 64.0, True, [64], {"a": 1}]), huge_not_int,
                         garbage.filter(lambda v: v is not None and (not_int(v) or v < 1)))
    if field_kind == "pos_int":
        return st.one_of(st.integers(max_value=0), st.sampled_from(["64", 64.5, False, None, [1]]), huge_not_int,
                         garbage.filter(lambda v: not_int(v) or v < 1))
    if field_kind == "unit":  # (0, 1]
        return st.one_of(st.floats(max_value=0), st.floats(min_value=1.0, exclude_min=True), huge,
                         st.sampled_from(["0.5", None, True, [0.5], {"v": 0.5}]), st.integers(min_value=2),
                         st.integers(max_value=0))
    if field_kind == "bool":
        return st.one_of(st.sampled_from(["true", "yes", 1, 0, None, 1.0, [True]]), garbage.filter(lambda v: type(v) is not bool))
    if field_kind == "rounding":
        return st.one_of(st.text(max_size=6).filter(lambda v: v not in ("rtn", "gptq")), st.sampled_from([1, None, True, ["rtn"]]))
    if field_kind == "granularity":
        return st.one_of(st.text(max_size=10).filter(lambda v: v not in ("per_token", "per_channel")), st.sampled_from([0, None, False]))
    if field_kind == "percentile":
        return st.one_of(st.floats(max_value=0), st.floats(min_value=100, exclude_min=True), huge,
                         st.sampled_from(["99", None, [99.0]]))
    if field_kind == "seq_len":
        return st.one_of(st.integers(max_value=1), st.sampled_from(["512", 512.0, None, True]), huge_not_int)
    raise AssertionError(field_kind)


INVALID_FIELDS = [
    ("weights", "bits", "bits"), ("weights", "group_size", "pos_int_or_null"), ("weights", "symmetric", "bool"),
    ("weights", "rounding", "rounding"), ("weights", "clip_ratio", "unit"), ("weights", "gptq_block", "pos_int"),
    ("weights", "gptq_damp", "unit"), ("activations", "bits", "bits"), ("activations", "granularity", "granularity"),
    ("activations", "percentile", "percentile"), ("activations", "clip_ratio", "unit"),
    ("activations", "symmetric", "bool"), ("calibration", "num_samples", "pos_int"),
    ("calibration", "seq_len", "seq_len"),
]


@st.composite
def invalid_leaf(draw):
    section, key, kind = draw(st.sampled_from(INVALID_FIELDS))
    d = draw(valid_recipes())
    value = draw(_bad(kind))
    if (section, key) == ("weights", "gptq_damp") and type(value) is float and 0 < value < 1:
        value = 1.0  # (0, 1) is open at 1
    sec = d.get(section) or {}
    sec = dict(sec)
    if section == "activations":
        sec.pop("observer", None)  # keep observer/granularity from failing first
        sec["granularity"] = sec.get("granularity", "per_token")
    sec[key] = value
    d[section] = sec
    return d, f"{section}.{key}"


def _assert_names(err: RecipeError, path: str) -> None:
    assert type(err) is RecipeError or isinstance(err, RecipeError)
    msg = str(err)
    assert path in msg, f"RecipeError does not name {path!r}: {msg!r}"
    assert "\n" not in msg.strip() or len(msg) < 2000


@settings(max_examples=n(400))
@given(invalid_leaf())
def test_invalid_leaf_raises_recipe_error_naming_path(case):
    d, path = case
    with pytest.raises(RecipeError) as ei, no_hang(10):
        qpass.Recipe.from_dict(d)
    _assert_names(ei.value, path)
    with pytest.raises(RecipeError) as ei, no_hang(10):
        resolve(d)
    _assert_names(ei.value, path)


unknown_keys = st.one_of(st.text(min_size=1, max_size=10), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


@settings(max_examples=n(150))
@given(valid_recipes(), st.sampled_from(["", "weights", "activations", "calibration"]), unknown_keys, garbage)
def test_unknown_key_is_named(d, section, key, value):
    if section == "":
        assume(key not in {"name", "version", "weights", "activations", "passes", "ignore", "calibration"})
        d[key] = value
        path = str(key)
    else:
        fields = {"weights": qpass.WeightSpec, "activations": qpass.ActivationSpec,
                  "calibration": qpass.CalibrationSpec}[section]
        import dataclasses

        assume(key not in {f.name for f in dataclasses.fields(fields)})
        sec = dict(d.get(section) or {})
        sec[key] = value
        d[section] = sec
        path = f"{section}.{key}"
    with pytest.raises(RecipeError) as ei, no_hang(10):
        qpass.Recipe.from_dict(d)
    _assert_names(ei.value, path)
    assert "unknown key" in str(ei.value)


@settings(max_examples=n(200))
@given(valid_recipes(), st.sampled_from(["weights", "activations", "calibration", "passes", "ignore", "name", "version"]),
       garbage)
def test_nested_garbage_is_recipe_error(d, key, value):
    """Any plain data at a top-level key: a valid recipe or RecipeError naming that key."""
    d[key] = value
    with no_hang(10):
        try:
            r = qpass.Recipe.from_dict(copy.deepcopy(d))
        except RecipeError as e:
            msg = str(e)
            assert key in msg or msg.startswith("recipe:"), msg
            return
    out = r.to_dict()
    assert qpass.Recipe.from_dict(json.loads(r.to_json())).to_dict() == out


@settings(max_examples=n(100))
@given(st.lists(st.one_of(ignore_globs, st.just(""), st.integers(), st.none(), st.lists(ignore_globs, max_size=2)),
                max_size=4) | ignore_globs | st.just("") | st.integers() | st.none() | st.dictionaries(ignore_globs, ignore_globs, max_size=2))
def test_ignore_strings_and_lists(value):
    """`ignore: lm_head` is [lm_head]; a list of non-empty strings is kept; anything else names `ignore`.
    Also through a Recipe built in Python (validated in __post_init__, resolve(Recipe), to_dict)."""
    d = {"weights": {}, "ignore": value}
    ok = (isinstance(value, str) and value) or (isinstance(value, list) and all(isinstance(v, str) and v for v in value))
    with no_hang(10):
        if not ok:
            with pytest.raises(RecipeError) as ei:
                qpass.Recipe.from_dict(d)
            assert "ignore" in str(ei.value)
            with pytest.raises(RecipeError):
                qpass.Recipe(ignore=value)
            return
        want = [value] if isinstance(value, str) else value
        assert qpass.Recipe.from_dict(d).ignore == want
        r = qpass.Recipe(ignore=copy.copy(value))
        assert r.ignore == want and r.to_dict()["ignore"] == want
        assert resolve(r).ignore == want
        assert qpass.Recipe.from_dict(r.to_dict()).to_dict() == r.to_dict()


@settings(max_examples=n(80))
@given(st.sampled_from(["weights.bits", "weights.group_size", "weights.clip_ratio", "activations.percentile",
                        "calibration.num_samples", "calibration.sink_hessian_weight", "weights.gptq_damp"]), huge)
def test_huge_and_nonfinite_numbers(path, value):
    section, key = path.split(".")
    d = {section: {key: value}}
    if section == "activations":
        d["activations"]["granularity"] = "per_channel"
    if key == "sink_hessian_weight":
        d[section]["skip_tokens"] = 1
    with no_hang(10):
        try:
            r = qpass.Recipe.from_dict(d)
        except RecipeError as e:
            _assert_names(e, path)
            return
    # only accepted: an int field with a huge positive int (group_size, num_samples have no upper bound)
    assert type(value) is int and value > 0 and key in ("group_size", "num_samples"), (path, value)
    assert qpass.Recipe.from_dict(json.loads(r.to_json())).to_dict() == r.to_dict()


@settings(max_examples=n(60))
@given(st.one_of(st.integers(), st.floats(), st.binary(max_size=5), st.lists(st.integers(), max_size=2), st.none(),
                 st.text(max_size=12).filter(lambda s: "/" not in s and "\x00" not in s and not os.path.exists(s)),
                 st.tuples(st.integers())))
def test_resolve_refuses_non_recipes(value):
    assume(not (isinstance(value, str) and value in qpass.recipes()))
    with pytest.raises(RecipeError) as ei, no_hang(10):
        resolve(value)
    assert str(ei.value).startswith("recipe")


@settings(max_examples=n(20))
@given(st.sampled_from(sorted(qpass.recipes())))
def test_presets_round_trip(name):
    r = resolve(name)
    out = r.to_dict()
    assert qpass.Recipe.from_dict(json.loads(r.to_json())).to_dict() == out
    assert qpass.Recipe.from_dict(yaml.safe_load(r.to_yaml())).to_dict() == out


# ------------------------------------------------------------------------------------------------ YAML text
@st.composite
def yaml_with_aliases(draw):
    """A valid recipe written with anchors / aliases / merge keys: it must load like the plain dict."""
    bits = draw(st.sampled_from(BITS))
    group = draw(st.sampled_from([32, 64, 128]))
    globs = draw(st.lists(ignore_globs, min_size=1, max_size=3))
    text = (f"weights: &w\n  bits: {bits}\n  group_size: {group}\n"
            f"ignore: [&g0 {json.dumps(globs[0])}" + "".join(f", {json.dumps(g)}" for g in globs[1:]) + ", *g0]\n")
    want = {"weights": {"bits": bits, "group_size": group}, "ignore": globs + [globs[0]]}
    if draw(st.booleans()):
        text += "activations:\n  <<: *w\n  granularity: per_token\n"
        want["activations"] = {"bits": bits, "group_size": group, "granularity": "per_token"}  # group_size: unknown
    return text, want


@settings(max_examples=n(60))
@given(yaml_with_aliases())
def test_yaml_aliases(case):
    text, want = case
    from qpass.recipe import load_yaml

    with no_hang(10):
        data = load_yaml(text)
        assert data == want
        if "activations" in want:  # merged `group_size` is not an activation key
            with pytest.raises(RecipeError) as ei:
                qpass.Recipe.from_dict(data)
            _assert_names(ei.value, "activations.group_size")
        else:
            r = qpass.Recipe.from_dict(data)
            assert r.weights.bits == want["weights"]["bits"] and r.ignore == want["ignore"]


@st.composite
def alias_bombs(draw):
    """Billion-laughs documents (sequence or mapping levels, optionally under a recipe key or a merge key):
    each level repeats the previous one `width` times."""
    width = draw(st.integers(2, 12))
    depth = draw(st.integers(6, 14))
    style = draw(st.sampled_from(["seq", "map", "merge"]))
    where = draw(st.sampled_from(["ignore", "passes", "weights", "top", "junk"]))
    lines = ['l0: &l0 ["lol"]'] if style != "map" else ["l0: &l0 {a: lol}"]
    for i in range(1, depth):
        if style == "seq":
            body = "[" + ", ".join([f"*l{i - 1}"] * width) + "]"
        elif style == "map":
            body = "{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}"
        else:
            body = "{<<: *l%d, " % (i - 1) + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}"
        lines.append(f"l{i}: &l{i} {body}")
    last = f"*l{depth - 1}"
    if where == "top":
        text = "\n".join(lines) + "\n"
    elif where == "junk":
        text = "junk:\n" + "".join(f"  {ln}\n" for ln in lines) + "weights: {bits: 4}\n"
    else:
        text = "defs:\n" + "".join(f"  {ln}\n" for ln in lines) + f"{where}: {last}\n"
    return text, width ** depth


@settings(max_examples=n(60))
@given(alias_bombs(), st.sampled_from(["load_yaml", "file"]))
def test_yaml_alias_bomb_is_refused_quickly(tmp_path_factory, bomb, via):
    text, size = bomb
    from qpass.recipe import load_yaml

    with no_hang(15):
        try:
            if via == "load_yaml":
                data = load_yaml(text)
                qpass.Recipe.from_dict(data)
            else:
                p = tmp_path_factory.mktemp("bomb") / "bomb.yaml"
                p.write_text(text)
                resolve(str(p))
        except RecipeError:
            return
    pytest.fail(f"a recipe with unknown keys / garbage was accepted (expanded size {size})")


@settings(max_examples=n(60))
@given(st.text(max_size=60) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_arbitrary_yaml_text(text):
    """Any text through the YAML path: plain data or RecipeError; then the validator: Recipe or RecipeError."""
    from qpass.recipe import load_yaml

    with no_hang(10):
        try:
            data = load_yaml(text)
        except RecipeError:
            return
        if isinstance(data, dict):
            try:
                qpass.Recipe.from_dict(data)
            except RecipeError:
                pass


@settings(max_examples=n(12))
@given(st.integers(50, 1200), st.sampled_from(["[", "{a: ", "- "]))
def test_deeply_nested_yaml_and_json(depth, opener):
    from qpass.recipe import load_json, load_yaml

    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    text = "ignore: " + opener * depth + "x" + closer * depth if opener != "- " else \
        "".join("  " * i + "- \n" for i in range(depth))
    with no_hang(20):
        for fn, t in ((load_yaml, text), (load_json, "[" * depth + "]" * depth)):
            try:
                data = fn(t)
            except RecipeError:
                continue
            if isinstance(data, dict):
                with pytest.raises(RecipeError):
                    qpass.Recipe.from_dict(data)


def test_nan_floats_are_refused():
    for path in ("weights.clip_ratio", "activations.percentile", "calibration.sink_hessian_weight"):
        section, key = path.split(".")
        d = {section: {key: float("nan")}}
        with pytest.raises(RecipeError) as ei:
            qpass.Recipe.from_dict(d)
        _assert_names(ei.value, path)
    assert math.isnan(float("nan"))


@settings(max_examples=n(60))
@given(st.text(alphabet="ab.*+?()[]{}|^$\\0-9,", max_size=8), st.booleans())
def test_ignore_regex_is_checked(pattern, as_list):
    """`re:<regex>` in ignore: a regex Python cannot compile is a RecipeError naming `ignore`, at validation
    time — not a re.error later during qpass.compile."""
    import re

    value = ["lm_head", "re:" + pattern] if as_list else "re:" + pattern
    try:
        re.compile(pattern)
        ok = True
    except re.error:
        ok = False
    with no_hang(10):
        if ok:
            assert qpass.Recipe.from_dict({"weights": {}, "ignore": value}).ignore == (value if as_list else [value])
        else:
            with pytest.raises(RecipeError) as ei:
                qpass.Recipe.from_dict({"weights": {}, "ignore": value})
            assert "ignore" in str(ei.value)
