"""The schema: one mechanism that checks every recipe field and every pass option.

Each field of a schema dataclass (the recipe's WeightSpec, ActivationSpec, CalibrationSpec, Recipe, and every
pass's options) is checked by `build` from its type hint (int, float, str, bool, Literal[...], X | None,
list[X], dict[K, V], nested dataclasses) plus the constraints declared with `opt(...)` in the field's metadata.
Constraints that relate several fields live in the dataclass's `check_fields(self, path)` method, which `build`
calls after the fields; a type that accepts other spellings of its data (a pass given as a bare name) says so
in a `normalize_data(value, path)` classmethod. There is no other validation path: a dataclass built in Python
checks itself with the same `build` (`Checked.__post_init__`), and passes receive options built here.
Also here: the bounded YAML / JSON readers recipes are loaded with. Nothing in this module knows qpass's passes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Literal

class RecipeError(ValueError):
    """A recipe that cannot be used: the message names the key path and what is allowed."""


class _Interval:
    """An interval written "[0, 1]", "(0, 1]", "[1, inf)" ..."""

    _RE = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*$")

    def __init__(self, text: str):
        m = self._RE.match(text)
        if m is None:
            raise ValueError(f"bad interval {text!r}")
        self.text = text
        self.lo_closed, self.hi_closed = m.group(1) == "[", m.group(4) == "]"
        self.lo, self.hi = float(m.group(2)), float(m.group(3))

    def __contains__(self, v) -> bool:
        lo_ok = v >= self.lo if self.lo_closed else v > self.lo
        hi_ok = v <= self.hi if self.hi_closed else v < self.hi
        return bool(lo_ok and hi_ok)  # NaN fails both


def opt(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, range: str | None = None,
        allowed: tuple | None = None, item_range: str | None = None, min_len: int | None = None,
        nonempty: bool = False, pow2: bool = False, desc: str | None = None, message: str | None = None):
    """A dataclass field with declared constraints, checked by the recipe validator:
    `range` an interval ("(0, 1]", "[1, inf)"); `allowed` a tuple of values; `item_range` an interval for every
    item of a list; `min_len` a list's minimum length; `nonempty` a non-empty string (or each string of a list);
    `pow2` a power of two; `desc` what is expected, in words (used in the error instead of the interval);
    `message` a format string ({value}) replacing the whole error text after the key path."""
    meta = {"range": _Interval(range) if range else None, "allowed": allowed,
            "item_range": _Interval(item_range) if item_range else None, "min_len": min_len,
            "nonempty": nonempty, "pow2": pow2, "desc": desc, "message": message}
    kw = {"metadata": {"qpass": meta}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    return field(**kw)


def _check_meta(f: dataclasses.Field, value, path: str) -> None:
    meta = f.metadata.get("qpass")
    if meta is None or value is None:
        return

    def fail(what: str):
        if meta["message"]:
            raise RecipeError(f"{path}: {meta['message'].format(value=value)}")
        raise RecipeError(f"{path}: must be {meta['desc'] or what}, got {value!r}")

    if meta["allowed"] is not None and value not in meta["allowed"]:
        if meta["message"]:
            fail("")
        raise RecipeError(f"{path}: {value!r} is not supported; allowed: {', '.join(map(repr, meta['allowed']))}")
    if meta["range"] is not None and value not in meta["range"]:
        fail(f"in {meta['range'].text}")
    if meta["pow2"] and (value < 1 or value & (value - 1)):
        fail("a power of two")
    if meta["nonempty"]:
        items = value if isinstance(value, list) else [value]
        for i, v in enumerate(items):
            if not v:
                where = f"{path}[{i}]" if isinstance(value, list) else path
                raise RecipeError(f"{where}: must be a non-empty string, got {v!r}")
    if meta["min_len"] is not None and len(value) < meta["min_len"]:
        fail(f"a list of at least {meta['min_len']} item(s)")
    if meta["item_range"] is not None:
        for i, v in enumerate(value):
            if v not in meta["item_range"]:
                raise RecipeError(f"{path}[{i}]: must be in {meta['item_range'].text}, got {v!r}")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} to {_type_name(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _build(tp, value, path: str):
    """A value of type `tp` from plain data (or an instance, checked in place), raising RecipeError with the key
    path on any mismatch. Dataclasses: every field through this function, then its `opt(...)` constraints, then
    the class's `check_fields(path)`."""
    where = path or "recipe"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        for o in real:
            try:
                return _build(o, value, path)
            except RecipeError:
                if len(real) == 1:
                    raise
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool) or value not in typing.get_args(tp):
            raise RecipeError(f"{where}: {value!r} is not allowed; allowed: {_type_name(tp)}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str) and item is str:  # `ignore: lm_head` means [lm_head], not its characters
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list of {_type_name(item)}, got {type(value).__name__} {value!r}")
        return [_build(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = typing.get_args(tp)
        return {_build(kt, k, f"{path}.{k}"): _build(vt, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise RecipeError(f"{where}: expected a finite number, got an integer of {len(str(value))} digits") from None
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise RecipeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        if tp is float and not math.isfinite(value):
            raise RecipeError(f"{where}: expected a finite number, got {value!r}")
        return value
    if tp is Any:
        return value
    raise RecipeError(f"{where}: unsupported type {tp}")


def _build_dataclass(tp, value, path: str):
    where = path or "recipe"
    fields = dataclasses.fields(tp)
    if isinstance(value, tp):
        obj = value  # built in Python: check (and normalize) its fields in place
    else:
        normalize = getattr(tp, "normalize_data", None)  # a type's other spellings (e.g. a pass as a string)
        if normalize is not None:
            value = normalize(value, path)
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where}: expected a mapping with keys {_field_names(tp)}, got {value!r}")
        names = {f.name for f in fields}
        for key in value:
            if key not in names:
                raise RecipeError(f"{join(path, key)}: unknown key; allowed: {_field_names(tp)}")
        obj = tp.__new__(tp)
        for f in fields:
            if f.name in value:
                val = value[f.name]
            elif f.default is not dataclasses.MISSING:
                val = copy.copy(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                val = f.default_factory()
            else:
                raise RecipeError(f"{join(path, f.name)}: missing required key")
            object.__setattr__(obj, f.name, val)
    hints = typing.get_type_hints(tp)
    for f in fields:
        key = join(path, f.name)
        val = _build(hints[f.name], getattr(obj, f.name), key)
        _check_meta(f, val, key)
        object.__setattr__(obj, f.name, val)
    check = getattr(obj, "check_fields", None)
    if check is not None:
        check(path)
    return obj


def build(tp, value, path: str = ""):
    """Public entry: `value` (plain data or a `tp` instance) checked against the schema of `tp`."""
    return _build(tp, value, path)


def join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _field_names(tp) -> str:
    return ", ".join(f.name for f in dataclasses.fields(tp))


# -- reading recipe text -----------------------------------------------------------------------------------

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; SALE's τ tables a few tens of kB
MAX_YAML_NODES = 100_000  # YAML nodes after expanding every alias (a billion-laughs document is refused here)


def _yaml_loader():
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        """SafeLoader (plain data types only) that bounds alias expansion and refuses duplicate keys.

        Aliases (`*name`) are allowed — e.g. `<<: *defaults` — but each document's node count with every alias
        expanded is computed on the composed node graph (each distinct node once, so it costs nothing even
        for a bomb) and must stay ≤ MAX_YAML_NODES; recursive aliases are refused. PyYAML builds aliased data
        as shared Python objects, so without this bound a nested-alias document parses instantly and then
        makes anything that walks it (validation, deepcopy, json) loop ~10^9 times."""

        def compose_document(self):
            node = super().compose_document()
            sizes: dict[int, int] = {}
            active: set[int] = set()

            def expanded(n) -> int:
                key = id(n)
                if key in sizes:
                    return sizes[key]
                if key in active:
                    raise RecipeError(f"line {n.start_mark.line + 1}: a YAML alias refers to a node containing itself")
                active.add(key)
                if isinstance(n, yaml.MappingNode):
                    total = 1 + sum(expanded(k) + expanded(v) for k, v in n.value)
                elif isinstance(n, yaml.SequenceNode):
                    total = 1 + sum(expanded(v) for v in n.value)
                else:
                    total = 1
                active.discard(key)
                sizes[key] = total
                if total > MAX_YAML_NODES:
                    raise RecipeError(f"line {n.start_mark.line + 1}: the YAML document expands to more than "
                                      f"{MAX_YAML_NODES} nodes (nested aliases); a recipe needs a few dozen")
                return total

            if node is not None:
                expanded(node)
            return node

        def construct_mapping(self, node, deep=False):
            seen = {}
            for k, _ in node.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(k, deep=True)
                try:
                    if key in seen:
                        raise RecipeError(f"line {k.start_mark.line + 1}: duplicate key {key!r} (first on line {seen[key]})")
                    seen[key] = k.start_mark.line + 1
                except TypeError:  # unhashable key: let PyYAML report it
                    pass
            return super().construct_mapping(node, deep)

    # YAML 1.1 reads `1e-5` as a string; recipes mean a number (PyYAML's float resolver wants a dot).
    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return RecipeLoader


def load_yaml(text: str, where: str = "recipe") -> Any:
    """Plain data from YAML text, safely: see `_yaml_loader` (errors are RecipeError naming `where`)."""
    import yaml

    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{where}: more than {MAX_RECIPE_BYTES} characters; too large for a recipe")
    try:
        loader = _yaml_loader()(text)  # the reader already refuses some characters
    except yaml.YAMLError as e:
        raise RecipeError(f"{where}: not valid YAML: {e}") from None
    try:
        return loader.get_single_data()
    except RecipeError as e:
        raise RecipeError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{where}: not valid YAML: {e}") from None
    except RecursionError:
        raise RecipeError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_json(text: str, where: str = "recipe") -> Any:
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise RecipeError(f"{where}: duplicate key {k!r}")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise RecipeError(f"{where}: not valid JSON: {e}") from None
    except RecursionError:
        raise RecipeError(f"{where}: JSON nested too deeply") from None


class Checked:
    """Base of the schema dataclasses: an instance built in Python (`QSMOptions(samples=8)`) is checked by the
    same `build` as one read from a recipe file; errors name `schema_name` (a pass's options: the pass's name,
    e.g. `qsm.samples`), else the class."""

    schema_name: typing.ClassVar[str | None] = None

    def __post_init__(self):
        build(type(self), self, self.schema_name or type(self).__name__)
