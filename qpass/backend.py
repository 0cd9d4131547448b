"""`torch.compile(model, backend="qpass", options={"recipe": ...})`: quantize and lower inside torch.compile.

Each graph Dynamo hands over is planned and rewritten with the same machinery as qpass.compile — analysis,
site selection, a PassContext over the graph's parameter placeholders, the recipe's passes, then the one
transform (fake-quant insertion, then the lowering rules) — and the result goes to inductor (or the backend
named by options["backend"]). Calibration-free recipes only: a backend never sees data before it compiles.
No global torch/inductor setting is changed.

options: recipe (required: preset name, Recipe, dict or file), lower (default True), backend (default
"inductor"; "aot_eager" / "eager" for debugging), mode (inductor's mode: "reduce-overhead", "max-autotune",
...; torch.compile refuses `mode=` together with `options=`, so it travels here). torch.compile passes `options`
through to a registered backend as a keyword argument (torch._TorchCompileWrapper).
"""
from __future__ import annotations

import copy
import operator
import re
import warnings
import weakref
from typing import Callable

import torch
import torch.fx as fx
from torch.utils.weak import WeakIdKeyDictionary

from .analysis import analyze
from .capture import CapturedGraph
from .driver import plan_model
from .inner import MODES, compile_inner, erase_grad_mode_changes, without_grad
from .passes import registry
from .lowering.lower import group_size_warning, quantize_transform
from .plan import Plan
from .recipe import Recipe, RecipeError, resolve

OPTIONS = ("recipe", "lower", "backend", "mode")


def _fqn(source_name: str) -> str:
    """`L['self']._modules['model']._modules['layers']._modules['0']._parameters['weight']` -> FQN."""
    s = re.sub(r"\._(?:modules|parameters|buffers)\['([^']*)'\]", r".\1", source_name)
    s = re.sub(r"\['([^']*)'\]", r".\1", s)
    s = re.sub(r"\[(\d+)\]", r".\1", s)
    s = re.sub(r"^L\.(self|model|mod|m|args\.\d+)\b\.?", "", s)  # the frame's module: self, or args[0] (torch >= 2.12)
    return s.strip(".")


class _Parameters(torch.nn.Module):
    """The graph's parameter placeholders seen as a model: what PassContext reads (get_parameter)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self._tensors = tensors

    def get_parameter(self, target: str) -> torch.Tensor:
        return self._tensors[target]


def capture_from_dynamo(gm: fx.GraphModule, example_inputs) -> CapturedGraph:
    """A CapturedGraph with placeholder -> FQN from Dynamo's graph arguments (their guard sources)."""
    cap = CapturedGraph(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, example_inputs):
        grapharg = node.meta.get("grapharg")
        source = getattr(grapharg, "source", None)
        if not isinstance(value, torch.Tensor) or source is None:
            continue
        name = source.name() if callable(source.name) else source.name
        if "_parameters" in name or "_buffers" in name or isinstance(value, torch.nn.Parameter):
            cap.tensor_of[node] = value
            cap.fqn_of[node] = _fqn(name)
    return cap


def _options(options) -> tuple[Recipe, bool, str, str | None]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RecipeError(f"backend='qpass' options: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(OPTIONS)}")
    if "recipe" not in options:
        raise RecipeError("backend='qpass' needs options={'recipe': <preset name | Recipe | dict | file>}")
    recipe = options["recipe"]
    recipe = resolve(recipe)
    if recipe.needs_calibration:
        raise RecipeError(
            f"backend='qpass': recipe {recipe.name!r} needs calibration data, which a torch.compile backend never "
            "sees; use qpass.compile(model, recipe, calib) for it, or a calibration-free recipe"
        )
    edits = [p.name for p in recipe.passes if registry.get(p.name).edits_weights]
    if edits:  # the backend plans on the user's live parameters: no pass may fold anything into them
        raise RecipeError(f"backend='qpass': pass(es) {', '.join(edits)} edit the model's weights, which the backend "
                          "works on in place; use qpass.compile (it quantizes a copy)")
    if recipe.runs_model:
        raise RecipeError(
            "backend='qpass': a pass of this recipe calibrates by running the model (sale: its τ), which a "
            "torch.compile backend cannot do; give `taus` in the sale pass's options (e.g. from a qpass.compile model: {m: p.taus for m, p in qpass_state.plan.attention.items()}) or use qpass.compile"
        )
    mode = options.get("mode")
    if mode is not None and mode not in MODES:
        raise RecipeError(f"backend='qpass' options: mode {mode!r} is not one of {', '.join(MODES)}")
    return recipe, bool(options.get("lower", True)), str(options.get("backend", "inductor")), mode


# Plans per live weight tensor (the graph's first linear weight): a recompilation (new shapes, prefill vs decode)
# reuses the plan instead of re-running the passes, and the plan's transforms (one per `lower`), whose constant
# cache holds each site's packed weights once for all of the model's graphs (a transform per graph packed every
# weight again for each new prompt length). Weakly keyed, so a plan goes away with its model, and kept here rather
# than on the tensor (where pickling the model would carry it along).
_PLANS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def forget(model: torch.nn.Module) -> None:
    """Drop the plans and packed weights the backend keeps for `model`'s weights (they otherwise live as long as
    the weights do): for a model compiled again with another recipe, or a benchmark going through several."""
    for p in model.parameters():
        _PLANS.pop(p, None)


def _planned(cap: CapturedGraph, recipe: Recipe, lower: bool) -> tuple[Plan, Callable]:
    """The graph's plan and transform, made once per set of weights, recipe, graph sites, dtype and device
    (`model.to(...)` keeps the Parameter objects but changes what the packed tensors must be)."""
    analysis = analyze(cap)
    params = _Parameters({cap.fqn_of[n]: t for n, t in cap.tensor_of.items()})
    if not analysis.linears:
        plan = plan_model(params, recipe, analysis, progress=False)
        return plan, quantize_transform(plan, lower)
    anchor = params.get_parameter(analysis.linears[0].weight)
    key = (recipe.to_json(), tuple(s.name for s in analysis.linears), anchor.dtype, anchor.device)
    plans = _PLANS.setdefault(anchor, {})
    if key not in plans:
        plans[key] = (plan_model(params, recipe, analysis, progress=False), {})
    plan, transforms = plans[key]
    if lower not in transforms:
        transforms[lower] = quantize_transform(plan, lower)
    return plan, transforms[lower]


def _quantize_graph(gm: fx.GraphModule, example_inputs, recipe: Recipe, lower: bool) -> tuple[fx.GraphModule, list[int]]:
    """(the planned and rewritten graph, positions of the inputs whose tensors it baked in: the quantized sites'
    weights) — the one transform of qpass.compile."""
    cap = capture_from_dynamo(gm, example_inputs)
    plan, transform = _planned(cap, recipe, lower)
    transform(cap)
    message = group_size_warning(transform.refused_groups, plan)
    if message:  # per graph; Python shows a repeated message once
        warnings.warn(message, UserWarning, stacklevel=3)
    gm.graph.lint()
    # gm itself goes on, with Dynamo's metadata, so AOT autograd knows which inputs are static (parameters, a
    # StaticCache's tensors): without it inductor's CUDA graphs ("reduce-overhead") copy every weight on each
    # replay and skip graphs that update the cache in place. The packed buffers the rewrite registered get a
    # source in Dynamo's parameter table (AOT autograd refuses a buffer without one; a constant needs no guard).
    from torch._dynamo.source import ConstantSource

    sources = getattr(gm, "_param_name_to_source", None)
    if sources is not None:
        for name in gm._buffers:
            sources.setdefault(name, ConstantSource(f"qpass_constant_{name}"))
    gm.recompile()
    gm.meta["qpass_lowering"] = dict(transform.outcomes)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    baked = {sp.weight_fqn for sp in plan.quantized() if sp.weight is not None}
    return gm, [i for i, n in enumerate(placeholders) if cap.fqn_of.get(n) in baked]


def qpass_backend(gm: fx.GraphModule, example_inputs, options=None, mode=None):
    """The registered `qpass` Dynamo backend (see the module docstring). `mode=` only arrives without
    `options` (torch.compile refuses both), so the recipe is then missing and the call is refused."""
    recipe, lower, inner, inductor_mode = _options(options)
    pristine = copy.deepcopy(gm.graph)  # the transform edits gm's graph; other weights are planned from this
    qgm, positions = _quantize_graph(gm, example_inputs, recipe, lower)
    compiled = compile_inner(qgm, example_inputs, inner, inductor_mode)

    def requantize(args) -> Callable:
        other, _ = _quantize_graph(fx.GraphModule(gm, copy.deepcopy(pristine)), args, recipe, lower)
        erase_grad_mode_changes(other)
        return without_grad(other.forward)

    return _for_these_weights(compiled, [example_inputs[i] for i in positions], positions, requantize)


def _for_these_weights(compiled: Callable, weights: list, positions: list[int], requantize: Callable) -> Callable:
    """`compiled` for calls that pass the weights it was planned with (the packed tensors are baked into it).

    Dynamo guards a module's parameters on their shapes, not their identity, so a second model of the same class
    and options reuses this compiled code with its own parameters as inputs: those calls get a graph quantized
    from *their* weights (re-planned once per model, then cached here), run without inductor (its graph was
    specialized for the first model's inputs) — correct, slower, and said once in a warning. Never the first
    model's weights."""
    if not positions:
        return compiled
    pick = operator.itemgetter(*positions)
    first = positions[0]
    mine = (tuple(map(id, weights)), weakref.ref(weights[0]))
    others: list = []  # [(ids, weakref to the first weight, fn)]

    def run(*args):
        ids = tuple(map(id, pick(args))) if len(positions) > 1 else (id(args[first]),)
        if ids == mine[0] and mine[1]() is args[first]:
            return compiled(*args)
        for key, ref, fn in others:
            if key == ids and ref() is args[first]:
                return fn(*args)
        warnings.warn(
            "qpass backend: this compiled code was planned for another model's weights (Dynamo reuses compiled "
            "code across modules of one class); quantizing this model's weights now. Its graphs run without the "
            "inner compiler — correct but slower; call torch._dynamo.reset() before compiling another model of "
            "the same class for full speed.", UserWarning, stacklevel=2)
        fn = requantize(list(args))
        others[:] = [o for o in others if o[1]() is not None] + [(ids, weakref.ref(args[first]), fn)]
        return fn(*args)

    return run


def register() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    if "qpass" not in _BACKENDS:
        register_backend(name="qpass")(qpass_backend)
