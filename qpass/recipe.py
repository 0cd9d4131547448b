"""Recipes: versioned, typed, validated descriptions of what to quantize and how. A recipe is data; passes do the work.

Every error names the offending key path (e.g. `weights.group_size`) and what is allowed there.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

RECIPE_VERSION = 1
SUPPORTED_BITS = (2, 3, 4, 8)


class RecipeError(ValueError):
    """A recipe that cannot be used: the message names the key path and what is allowed."""


@dataclass
class WeightSpec:
    bits: int = 4
    group_size: int | None = 64  # None: one scale per output channel
    symmetric: bool = True
    rounding: Literal["rtn", "gptq"] = "rtn"  # round to nearest | GPTQ (needs calibration: Hessian XᵀX)
    clip_ratio: float = 1.0  # scale the range before rounding (1.0 = absmax / min-max)
    gptq_damp: float = 0.01  # GPTQ: damping, a fraction of the Hessian's mean diagonal
    gptq_act_order: bool = False  # GPTQ: quantize columns in order of decreasing Hessian diagonal
    gptq_block: int = 128  # GPTQ: columns per lazy-update block
    gptq_static_groups: bool = False  # GPTQ: group scales from the original weight (the RTN grid), not the updated one


@dataclass
class ActivationSpec:
    bits: int = 8
    granularity: Literal["per_token", "per_channel"] = "per_token"  # per_token is dynamic, per_channel static
    symmetric: bool = True
    observer: Literal["absmax", "minmax", "percentile"] = "absmax"  # static ranges only
    percentile: float = 99.99  # observer=percentile: per-channel percentile of |x|, averaged over batches
    clip_ratio: float = 1.0


@dataclass
class CalibrationSpec:
    num_samples: int = 32  # sequences
    seq_len: int = 512
    skip_tokens: int = 0  # leave the first N tokens of each sequence out of the statistics (attention sinks)
    # GPTQ with skip_tokens: the skipped tokens still enter the Hessian, each weighted like this many ordinary
    # tokens (0: left out; 1: as any token — their huge norm then dominates XᵀX)
    sink_hessian_weight: float = 0.0


@dataclass
class PassSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str = "custom"
    version: int = RECIPE_VERSION
    weights: WeightSpec | None = field(default_factory=WeightSpec)  # None: weights stay in full precision
    activations: ActivationSpec | None = None  # None: activations stay in full precision
    passes: list[PassSpec] = field(default_factory=list)  # transforms run before quantization, in order
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])  # module-name globs ("re:" for a regex)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    def __post_init__(self):
        validate(self)

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
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
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


# -- validation ----------------------------------------------------------------------------------------------


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _build(tp, value, path: str):
    """Build a value of type `tp` from plain data, raising RecipeError with the key path on any mismatch."""
    where = path or "recipe"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _build(opt, value, path)
            except RecipeError:
                if len([o for o in options if o is not type(None)]) == 1:
                    raise
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"{where}: {value!r} is not allowed; allowed: {_type_name(tp)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if tp is PassSpec and isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping with keys {_field_names(tp)}, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        if tp is PassSpec:  # a pass is written {name: ..., <its options>}
            value = {"name": value.get("name"), "options": {k: v for k, v in value.items() if k not in ("name", "options")} | dict(value.get("options") or {})}
        for key in value:
            if key not in names:
                raise RecipeError(f"{_join(path, key)}: unknown key; allowed: {_field_names(tp)}")
        kwargs = {k: _build(hints[k], v, _join(path, k)) for k, v in value.items()}
        try:
            obj = tp.__new__(tp)
            for f in dataclasses.fields(tp):
                if f.name in kwargs:
                    val = kwargs[f.name]
                elif f.default is not dataclasses.MISSING:
                    val = copy.copy(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    val = f.default_factory()
                else:
                    raise RecipeError(f"{_join(path, f.name)}: missing required key")
                object.__setattr__(obj, f.name, val)
        except TypeError as e:
            raise RecipeError(f"{where}: {e}") from None
        if tp is Recipe:
            validate(obj)
        return obj
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise RecipeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise RecipeError(f"{where}: unsupported type {tp}")


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _field_names(tp) -> str:
    return ", ".join(f.name for f in dataclasses.fields(tp))


def validate(r: Recipe) -> None:
    if r.version != RECIPE_VERSION:
        raise RecipeError(f"version: recipe version {r.version} is not supported; this qpass reads version {RECIPE_VERSION}")
    for key, obj in (("weights", r.weights), ("activations", r.activations), ("calibration", r.calibration)):
        if obj is not None and dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                _build(typing.get_type_hints(type(obj))[f.name], getattr(obj, f.name), f"{key}.{f.name}")
    w, a = r.weights, r.activations
    if w is not None:
        if w.bits not in SUPPORTED_BITS:
            raise RecipeError(f"weights.bits: {w.bits} is not supported; allowed: {', '.join(map(str, SUPPORTED_BITS))}")
        if w.group_size is not None and w.group_size <= 0:
            raise RecipeError(f"weights.group_size: must be a positive integer or null (per channel), got {w.group_size}")
        if not 0 < w.clip_ratio <= 1:
            raise RecipeError(f"weights.clip_ratio: must be in (0, 1], got {w.clip_ratio}")
        if not 0 <= w.gptq_damp < 1 or w.gptq_block <= 0:
            raise RecipeError("weights.gptq_damp must be in [0, 1) and weights.gptq_block positive")
    if a is not None:
        if a.bits not in SUPPORTED_BITS:
            raise RecipeError(f"activations.bits: {a.bits} is not supported; allowed: {', '.join(map(str, SUPPORTED_BITS))}")
        if a.granularity == "per_token" and a.observer != "absmax":
            raise RecipeError(
                "activations.observer: per_token activations are dynamic and use no observer; "
                "an observer (minmax, percentile) needs granularity per_channel"
            )
        if not 0 < a.percentile <= 100:
            raise RecipeError(f"activations.percentile: must be in (0, 100], got {a.percentile}")
        if not 0 < a.clip_ratio <= 1:
            raise RecipeError(f"activations.clip_ratio: must be in (0, 1], got {a.clip_ratio}")
    if r.calibration.num_samples <= 0 or r.calibration.seq_len <= 1:
        raise RecipeError("calibration: num_samples must be ≥ 1 and seq_len ≥ 2")
    if not 0 <= r.calibration.skip_tokens < r.calibration.seq_len:
        raise RecipeError("calibration.skip_tokens: must be in [0, seq_len)")
    if r.calibration.sink_hessian_weight < 0:
        raise RecipeError(f"calibration.sink_hessian_weight: must be ≥ 0, got {r.calibration.sink_hessian_weight}")
    if r.calibration.sink_hessian_weight and not r.calibration.skip_tokens:
        raise RecipeError("calibration.sink_hessian_weight: needs calibration.skip_tokens ≥ 1 (it weights the skipped tokens)")
    if w is None and a is None and not r.passes:
        raise RecipeError("recipe: nothing to do — set weights, activations or passes")
    from .passes import registry

    for i, p in enumerate(r.passes):
        opts = registry.validate(p, f"passes[{i}]")
        if hasattr(opts, "check_values"):  # value checks of a pass's options (they name passes[i].<option>)
            opts.check_values(f"passes[{i}]")
    for i, pat in enumerate(r.ignore):
        if not isinstance(pat, str) or not pat:
            raise RecipeError(f"ignore[{i}]: expected a non-empty module-name pattern, got {pat!r}")


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
