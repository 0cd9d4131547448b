"""Recipes: versioned, typed, validated descriptions of what to quantize and how. A recipe is data; passes do the work.

Every error names the offending key path (e.g. `weights.group_size`) and what is allowed there.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

RECIPE_VERSION = 1
SUPPORTED_BITS = (2, 3, 4, 8)


class RecipeError(ValueError):
    """A recipe that cannot be used: the message names the key path and what is allowed."""


# -- the schema: one mechanism for every recipe field and every pass option -----------------------------------
#
# Each field of a recipe dataclass (WeightSpec, ActivationSpec, CalibrationSpec, Recipe) and of every pass's
# options dataclass is checked by `_build` from its type hint (int, float, str, bool, Literal[...], X | None,
# list[X], dict[K, V], nested dataclasses) plus the constraints declared with `opt(...)` in the field's metadata.
# Constraints that relate several fields live in the dataclass's `check_fields(self, path)` method, which
# `_build` calls after the fields. There is no other validation path: passes receive options built here.


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


@dataclass
class WeightSpec:
    bits: int = opt(4, allowed=SUPPORTED_BITS)
    group_size: int | None = opt(64, range="[1, inf)", desc="a positive integer or null (one scale per row)")
    symmetric: bool = True
    rounding: Literal["rtn", "gptq"] = "rtn"  # round to nearest | GPTQ (needs calibration: Hessian XᵀX)
    clip_ratio: float = opt(1.0, range="(0, 1]")  # scale the range before rounding (1.0 = absmax / min-max)
    # GPTQ: damping, a fraction of the Hessian's mean diagonal (> 0: with 0 a singular XᵀX cannot be inverted)
    gptq_damp: float = opt(0.01, range="(0, 1)")
    gptq_act_order: bool = False  # GPTQ: quantize columns in order of decreasing Hessian diagonal
    gptq_block: int = opt(128, range="[1, inf)")  # GPTQ: columns per lazy-update block
    gptq_static_groups: bool = False  # GPTQ: group scales from the original weight (the RTN grid), not the updated one


@dataclass
class ActivationSpec:
    bits: int = opt(8, allowed=SUPPORTED_BITS)
    granularity: Literal["per_token", "per_channel"] = "per_token"  # per_token is dynamic, per_channel static
    symmetric: bool = True
    observer: Literal["absmax", "minmax", "percentile"] = "absmax"  # static ranges only
    # observer=percentile: per-channel percentile of |x|, averaged over batches
    percentile: float = opt(99.99, range="(0, 100]")
    clip_ratio: float = opt(1.0, range="(0, 1]")

    def check_fields(self, path: str) -> None:
        if self.granularity == "per_token" and self.observer != "absmax":
            raise RecipeError(
                f"{_join(path, 'observer')}: per_token activations are dynamic and use no observer; "
                "an observer (minmax, percentile) needs granularity per_channel"
            )


@dataclass
class CalibrationSpec:
    num_samples: int = opt(32, range="[1, inf)")  # sequences
    seq_len: int = opt(512, range="[2, inf)")
    # leave the first N tokens of each sequence out of the statistics (attention sinks)
    skip_tokens: int = opt(0, range="[0, inf)")
    # GPTQ with skip_tokens: the skipped tokens still enter the Hessian, each weighted like this many ordinary
    # tokens (0: left out; 1: as any token — their huge norm then dominates XᵀX)
    sink_hessian_weight: float = opt(0.0, range="[0, 1]")  # the sink rows down-weighted in H

    def check_fields(self, path: str) -> None:
        if self.skip_tokens >= self.seq_len:
            raise RecipeError(f"{_join(path, 'skip_tokens')}: must be in [0, seq_len) = [0, {self.seq_len}), "
                              f"got {self.skip_tokens}")
        if self.sink_hessian_weight and not self.skip_tokens:
            raise RecipeError(f"{_join(path, 'sink_hessian_weight')}: needs {_join(path, 'skip_tokens')} ≥ 1 "
                              "(it weights the skipped tokens)")


@dataclass
class PassSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str = opt("custom", nonempty=True)
    version: int = opt(RECIPE_VERSION, allowed=(RECIPE_VERSION,),
                       message=f"recipe version {{value}} is not supported; this qpass reads version {RECIPE_VERSION}")
    weights: WeightSpec | None = field(default_factory=WeightSpec)  # None: weights stay in full precision
    activations: ActivationSpec | None = None  # None: activations stay in full precision
    passes: list[PassSpec] = field(default_factory=list)  # transforms run before quantization, in order
    # module-name globs ("re:" for a regex); a single string is read as a one-element list
    ignore: list[str] = opt(default_factory=lambda: ["lm_head"], nonempty=True)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    def __post_init__(self):
        validate(self)

    def check_fields(self, path: str) -> None:
        if self.weights is None and self.activations is None and not self.passes:
            raise RecipeError("recipe: nothing to do — set weights, activations or passes")
        for i, pattern in enumerate(self.ignore):
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as e:
                    raise RecipeError(f"ignore[{i}]: {pattern!r} is not a valid regular expression ({e})") from None
        from .passes import registry

        for i, p in enumerate(self.passes):
            opts = registry.validate(p, f"passes[{i}]")
            check = getattr(opts, "check_recipe", None)  # options that depend on the rest of the recipe
            if check is not None:
                check(self, f"passes[{i}]")

    # -- serialization ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        return _build(cls, data, "")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Recipe":
        """Read a YAML (.yaml/.yml) or JSON recipe. Files above MAX_RECIPE_BYTES are refused; YAML goes through
        `load_yaml` (safe types only, aliases bounded, duplicate keys refused)."""
        path = os.fspath(path)
        size = os.path.getsize(path)
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {size} bytes; a recipe file may hold at most {MAX_RECIPE_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_RECIPE_BYTES + 1)
        data = load_yaml(text, path) if path.endswith((".yaml", ".yml")) else load_json(text, path)
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe file must hold a mapping at the top level")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        text = self.to_yaml() if path.endswith((".yaml", ".yml")) else self.to_json()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    @property
    def needs_calibration(self) -> bool:
        from .passes import registry

        a = self.activations
        return bool(
            (a is not None and a.granularity == "per_channel")
            or (self.weights is not None and self.weights.rounding == "gptq")
            or any(registry.get(p.name).needs_calibration for p in self.passes)
        )


# -- loading ---------------------------------------------------------------------------------------------------

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


# -- validation ----------------------------------------------------------------------------------------------


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
        if tp is PassSpec and isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where}: expected a mapping with keys {_field_names(tp)}, got {value!r}")
        if tp is PassSpec:  # a pass is written {name: ..., <its options>}
            extra = value.get("options") or {}
            if not isinstance(extra, Mapping):
                raise RecipeError(f"{_join(path, 'options')}: expected a mapping, got {extra!r}")
            value = {"name": value.get("name"),
                     "options": {k: v for k, v in value.items() if k not in ("name", "options")} | dict(extra)}
        names = {f.name for f in fields}
        for key in value:
            if key not in names:
                raise RecipeError(f"{_join(path, key)}: unknown key; allowed: {_field_names(tp)}")
        obj = tp.__new__(tp)
        for f in fields:
            if f.name in value:
                val = value[f.name]
            elif f.default is not dataclasses.MISSING:
                val = copy.copy(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                val = f.default_factory()
            else:
                raise RecipeError(f"{_join(path, f.name)}: missing required key")
            object.__setattr__(obj, f.name, val)
    hints = typing.get_type_hints(tp)
    for f in fields:
        key = _join(path, f.name)
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


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _field_names(tp) -> str:
    return ", ".join(f.name for f in dataclasses.fields(tp))


def validate(r: Recipe) -> None:
    """Check (and normalize in place, e.g. `ignore: "lm_head"` -> ["lm_head"]) a recipe; RecipeError if bad."""
    _build(Recipe, r, "")


# -- presets -------------------------------------------------------------------------------------------------


def _presets() -> dict[str, Recipe]:
    per_token = lambda bits: ActivationSpec(bits=bits, granularity="per_token")  # noqa: E731
    return {
        "w8a16": Recipe("w8a16", weights=WeightSpec(bits=8, group_size=None)),
        "w8a8": Recipe("w8a8", weights=WeightSpec(bits=8, group_size=None), activations=per_token(8)),
        "w4a16": Recipe("w4a16", weights=WeightSpec(bits=4, group_size=64)),
        "w4a8": Recipe("w4a8", weights=WeightSpec(bits=4, group_size=64), activations=per_token(8)),
        "w4a4": Recipe("w4a4", weights=WeightSpec(bits=4, group_size=None), activations=per_token(4)),
        "w3a16": Recipe("w3a16", weights=WeightSpec(bits=3, group_size=64)),
        # Data-free PTQTP trit planes on every linear; embeddings, lm_head and norms untouched.
        "ternary": Recipe("ternary", weights=None, passes=[PassSpec("trit_planes")]),
        # SALE sparse attention (docs/sale.md): the configuration measured against both acceptance lines —
        # SmolLM2 8K +0.44% PPL with 63% of blocks skipped; H100 64K / 90% 3.33x cuDNN, estimate 14% of it
        "sale": Recipe("sale", weights=None, passes=[PassSpec("sale", {"block_m": 128, "block_n": 64, "pool": 8,
                                                                       "theta": 0.25, "tau_init": 0.256})]),
        # QSM (docs/qsm.md): static per-channel steps migrated into producers; the first token of each
        # calibration sequence (attention sink) does not set the ranges; GPTQ rounding (ablation: 124.6 -> 101.7).
        # w4a4: asymmetric steps, the sink (first position of a prefill) kept in full precision, o_proj steps
        # untied from the GQA max, GPTQ with act-order and static groups, the sink in H at weight 0.2,
        # joint activation x weight clip search (50.69).
        "w4a4-qsm": Recipe(
            "w4a4-qsm",
            weights=WeightSpec(bits=4, group_size=64, rounding="gptq", gptq_act_order=True, gptq_static_groups=True),
            activations=ActivationSpec(bits=4, granularity="per_channel", symmetric=False),
            passes=[PassSpec("qsm", {"keep_first": 1, "untie": True, "joint_clip": True})],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1, sink_hessian_weight=0.2),
        ),
        "w4a8-qsm": Recipe(
            "w4a8-qsm",
            weights=WeightSpec(bits=4, group_size=64, rounding="gptq"),
            activations=ActivationSpec(bits=8, granularity="per_channel"),
            passes=[PassSpec("qsm")],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1),
        ),
        # w8a8-smooth: per-row W8, symmetric A8 — what the int8 kernel runs (lowered; SmolLM2 27.98).
        "w8a8-smooth": Recipe(
            "w8a8-smooth",
            weights=WeightSpec(bits=8, group_size=None),
            activations=ActivationSpec(bits=8, granularity="per_channel"),
            passes=[PassSpec("smoothquant", {"alpha": 0.5}), PassSpec("qsm")],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1),
        ),
        # w8a8-smooth-g64: W8 g64 (sorted channels) and asymmetric A8 steps: SmolLM2 27.22 (docs/qsm.md); no
        # kernel takes grouped weight scales with asymmetric activations yet, so it stays on the fake-quant path.
        "w8a8-smooth-g64": Recipe(
            "w8a8-smooth-g64",
            weights=WeightSpec(bits=8, group_size=64),
            activations=ActivationSpec(bits=8, granularity="per_channel", symmetric=False),
            passes=[PassSpec("smoothquant", {"alpha": 0.5}), PassSpec("qsm")],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1),
        ),
        # w4a16: asymmetric g64, GPTQ with act-order and static groups (scales from the RTN grid of the original
        # weight); SmolLM2 38.03 -> 30.69 (docs/qsm.md).
        "w4a16-gptq": Recipe(
            "w4a16-gptq",
            weights=WeightSpec(bits=4, group_size=64, symmetric=False, rounding="gptq", gptq_act_order=True,
                               gptq_static_groups=True),
            calibration=CalibrationSpec(num_samples=32),
        ),
        "w8a8-static": Recipe(
            "w8a8-static",
            weights=WeightSpec(bits=8, group_size=None),
            activations=ActivationSpec(bits=8, granularity="per_channel", observer="absmax"),
        ),
    }


def recipes() -> dict[str, Recipe]:
    """The preset recipes by name (fresh copies: edit them freely)."""
    return _presets()


def resolve(recipe: "Recipe | dict | str | os.PathLike") -> Recipe:
    """A Recipe from a Recipe, a dict (the same keys as a YAML/JSON file, through the same validator), a preset
    name, or a path to a YAML/JSON file."""
    if isinstance(recipe, Recipe):
        validate(recipe)
        return copy.deepcopy(recipe)
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(copy.deepcopy(dict(recipe)))  # the caller's dict stays theirs
    if isinstance(recipe, (str, os.PathLike)):
        presets = _presets()
        if isinstance(recipe, str) and recipe in presets:
            return presets[recipe]
        if os.path.exists(recipe):
            return Recipe.from_file(recipe)
        raise RecipeError(f"recipe: {os.fspath(recipe)!r} is neither a preset ({', '.join(presets)}) nor a file")
    raise RecipeError(f"recipe: expected a Recipe, a dict, a preset name or a file path, got {type(recipe).__name__}")
