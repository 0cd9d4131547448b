"""Recipes: versioned, typed, validated descriptions of what to quantize and how. A recipe is data; passes do the work.

Every error names the offending key path (e.g. `weights.group_size`) and what is allowed there.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .passes import registry
from .schema import MAX_RECIPE_BYTES, RecipeError, build, join, load_json, load_yaml, opt
from .specs import ActivationSpec, CalibrationSpec, WeightSpec

__all__ = ["ActivationSpec", "CalibrationSpec", "PassSpec", "Recipe", "RecipeError", "WeightSpec", "build",
           "load_json", "load_yaml", "opt", "recipes", "resolve"]

RECIPE_VERSION = 1
@dataclass
class PassSpec:
    """One pass of a recipe: its registered name and its options. Written `{name: qsm, samples: 8}` (or just
    `qsm`) in a file; validation turns `options` into the pass's typed options (registry: `options` type),
    built once here — passes and calibration read this object."""

    name: str
    options: Any = field(default_factory=dict)  # a mapping before validation, the pass's options object after

    @classmethod
    def normalize_data(cls, value, path: str):
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, Mapping):  # options inline beside the name, or under `options:`
            extra = value.get("options") or {}
            if not isinstance(extra, Mapping):
                raise RecipeError(f"{join(path, 'options')}: expected a mapping, got {extra!r}")
            return {"name": value.get("name"),
                    "options": {k: v for k, v in value.items() if k not in ("name", "options")} | dict(extra)}
        return value

    def check_fields(self, path: str) -> None:
        info = registry.get(self.name, join(path, "name"))
        options = self.options
        if dataclasses.is_dataclass(options) and not isinstance(options, info.options):
            raise RecipeError(f"{join(path, 'options')}: expected {info.options.__name__}, "
                              f"got {type(options).__name__}")
        self.options = build(info.options, options, path)


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
        for i, p in enumerate(self.passes):
            check = getattr(p.options, "check_recipe", None)  # options that depend on the rest of the recipe
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
        return build(cls, data, "")

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
    def runs_model(self) -> bool:
        """A pass of this recipe runs the model on data (it uses calibration data when given, e.g. SALE's τ)."""
        return any(registry.get(p.name).runs_model is not None and registry.get(p.name).runs_model(p.options)
                   for p in self.passes)

    @property
    def reads_data(self) -> bool:
        """The recipe reads calibration data: it needs it, or a pass runs the model on data (SALE without τ)."""
        return self.needs_calibration or self.runs_model

    @property
    def needs_calibration(self) -> bool:
        a = self.activations
        return bool(
            (a is not None and (a.granularity == "per_channel" or a.clip_search != "none"))
            or (self.weights is not None and self.weights.rounding == "gptq")
            or any(registry.get(p.name).calibrates(p.options) for p in self.passes)
        )


# -- validation ----------------------------------------------------------------------------------------------


def validate(r: Recipe) -> None:
    """Check (and normalize in place, e.g. `ignore: "lm_head"` -> ["lm_head"]) a recipe; RecipeError if bad."""
    build(Recipe, r, "")


# -- presets -------------------------------------------------------------------------------------------------


def _presets() -> dict[str, Recipe]:
    per_token = lambda bits: ActivationSpec(bits=bits, granularity="per_token")  # noqa: E731
    # symmetric int4 g64 GPTQ with act-order and static groups (a fresh spec each use)
    gptq_w4 = lambda: WeightSpec(bits=4, group_size=64, rounding="gptq", gptq_act_order=True,  # noqa: E731
                                 gptq_static_groups=True)
    return {
        "w8a16": Recipe("w8a16", weights=WeightSpec(bits=8, group_size=None)),
        "w8a8": Recipe("w8a8", weights=WeightSpec(bits=8, group_size=None), activations=per_token(8)),
        # w4a16: asymmetric g64 RTN, data-free; chosen over symmetric RTN and over per-group MSE clip search on
        # SmolLM2 and stories260K perplexity and on weight/output error of tiny Qwen3/Gemma3/Phi-3/OPT with
        # heavy-tailed and outlier-channel weights (docs/results.md "Default W4A16"); lowered by qpass::w4a16_linear.
        "w4a16": Recipe("w4a16", weights=WeightSpec(bits=4, group_size=64, symmetric=False)),
        "w4a8": Recipe("w4a8", weights=WeightSpec(bits=4, group_size=64), activations=per_token(8)),
        "w4a4": Recipe("w4a4", weights=WeightSpec(bits=4, group_size=None), activations=per_token(4)),
        "w3a16": Recipe("w3a16", weights=WeightSpec(bits=3, group_size=64)),
        # Data-free PTQTP trit planes on every linear; embeddings, lm_head and norms untouched.
        "ternary": Recipe("ternary", weights=None, passes=[PassSpec("trit_planes")]),
        # The same format fitted with calibration data: Hessian-weighted scales, GPTQ-style trits (docs/tritplane.md);
        # given no data, it samples its calibration text from the model (SmolLM2 P&P 53.44 data-free -> 35.42)
        "ternary-calib": Recipe("ternary-calib", weights=None, passes=[PassSpec("trit_planes", {"calibration": True})],
                                calibration=CalibrationSpec(num_samples=32, self_generated=True)),
        # SALE sparse attention (docs/sale.md): the configuration measured against both acceptance lines —
        # SmolLM2 8K +0.44% PPL with 63% of blocks skipped; H100 64K / 90% 3.33x cuDNN, estimate 14% of it
        "sale": Recipe("sale", weights=None, passes=[PassSpec("sale", {"block_m": 128, "block_n": 64, "pool": 8,
                                                                       "theta": 0.25, "tau_init": 0.256})]),
        # QSM (docs/qsm.md): static per-channel steps migrated into producers; the first token of each
        # calibration sequence (attention sink) does not set the ranges; GPTQ rounding (ablation: 124.6 -> 101.7).
        # w4a4: asymmetric steps, the sink (first position of a prefill) kept in full precision, o_proj steps
        # untied from the GQA max, GPTQ with act-order and static groups, the sink in H at weight 0.2,
        # joint activation x weight clip search (50.69). Integer group steps (each group's step a multiple of one
        # row step: prefill runs one int8 GEMM over all of K; SmolLM2 48.08 -> 48.82 fake-quant, docs/qsm.md).
        "w4a4-qsm": Recipe(
            "w4a4-qsm",
            weights=dataclasses.replace(gptq_w4(), integer_group_steps=True),
            activations=ActivationSpec(bits=4, granularity="per_channel", symmetric=False),
            passes=[PassSpec("qsm", {"keep_first": 1, "untie": True, "joint_clip": True})],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1, sink_hessian_weight=0.2),
        ),
        # Rotations (docs/rotation.md): QuaRot's randomized Hadamard of the residual stream, V/O per head and an
        # online Hadamard before down_proj, folded before calibration; then GPTQ (symmetric g64: the integer
        # kernels' weights) and dynamic per-token activations, or QSM's static steps. Dynamic steps: each input's
        # clip and each weight group's range searched on calibration data (stories260K 35.95 -> 32.81, P&P).
        "w4a4-rot": Recipe(
            "w4a4-rot",
            weights=dataclasses.replace(gptq_w4(), clip_search="mse"),
            activations=dataclasses.replace(per_token(4), clip_search="mse"),
            passes=[PassSpec("rotate")],
            calibration=CalibrationSpec(num_samples=32),
        ),
        # Static W4A4 after the rotation: asymmetric g64 weights (zero points per group; SmolLM2 48.17 -> 45.01),
        # the online Hadamard before down_proj kept; qsm leaves the inputs it rotates dynamic per-token (it spreads
        # one token's outlier over every channel, which a static step would have to cover for all tokens: 58.70
        # all static). SmolLM2 36.30 / 36.59 (rotation seeds 0 / 1), 90 of 120 input tensors static; adding
        # `dynamic_fallback` gives 36.23 / 36.97 (docs/results.md "Static W4A4 with rotation")
        "w4a4-rot-qsm": Recipe(
            "w4a4-rot-qsm",
            weights=dataclasses.replace(gptq_w4(), symmetric=False),
            activations=ActivationSpec(bits=4, granularity="per_channel", symmetric=False),
            passes=[PassSpec("rotate"),
                    PassSpec("qsm", {"keep_first": 1, "untie": True, "joint_clip": True})],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1, sink_hessian_weight=0.2),
        ),
        "w4a8-rot": Recipe(
            "w4a8-rot",
            weights=dataclasses.replace(gptq_w4(), clip_search="mse"),
            activations=dataclasses.replace(per_token(8), clip_search="mse"),
            passes=[PassSpec("rotate")],
            calibration=CalibrationSpec(num_samples=32),
        ),
        # w4a8: w4a4-qsm's options at 8 bits (SmolLM2 39.10 -> 32.56, stories260K 6.383 -> 6.302; without untie,
        # joint_clip and the sink in H: 33.89 / 6.166 — docs/qsm.md "w4a8-qsm: what cost"), on asymmetric int4
        # weights (per-group zero points, which the int GEMMs subtract in int32): SmolLM2 32.56 -> 31.655 fake-quant;
        # integer group steps (as w4a4-qsm): 32.36 -> 30.81 in one session's side-by-side runs (docs/qsm.md).
        "w4a8-qsm": Recipe(
            "w4a8-qsm",
            weights=dataclasses.replace(gptq_w4(), symmetric=False, integer_group_steps=True),
            activations=ActivationSpec(bits=8, granularity="per_channel", symmetric=False),
            passes=[PassSpec("qsm", {"keep_first": 1, "untie": True, "joint_clip": True})],
            calibration=CalibrationSpec(num_samples=32, skip_tokens=1, sink_hessian_weight=0.2),
        ),
        # w8a8-smooth: per-row W8, symmetric A8 — what the int8 kernel runs. Static steps lose to dynamic per-token
        # ones where token norms vary (o_proj, down_proj inputs): dynamic_fallback keeps those tensors dynamic
        # (SmolLM2 27.94 -> 27.21, dynamic w8a8 27.61; docs/results.md "w8a8-smooth against dynamic w8a8").
        "w8a8-smooth": Recipe(
            "w8a8-smooth",
            weights=WeightSpec(bits=8, group_size=None),
            activations=ActivationSpec(bits=8, granularity="per_channel"),
            passes=[PassSpec("smoothquant", {"alpha": 0.5}), PassSpec("qsm", {"dynamic_fallback": True})],
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
        # weight), group ranges by MSE clip search; SmolLM2 38.03 -> 30.69 -> 29.39, stories260K 6.013 -> 5.932 (docs/results.md).
        "w4a16-gptq": Recipe(
            "w4a16-gptq",
            weights=WeightSpec(bits=4, group_size=64, symmetric=False, rounding="gptq", gptq_act_order=True,
                               gptq_static_groups=True, clip_search="mse"),
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
