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

import re
import warnings

import torch
import torch.fx as fx

from .analysis import analyze
from .capture import CapturedGraph
from .passes.context import PassContext
from .plan import select_sites
from .recipe import Recipe, RecipeError, resolve

OPTIONS = ("recipe", "lower", "backend", "mode")
ATTENTION = "<attention>"  # the cache key of a recipe's attention plans (SALE τ), beside the site plans
_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _fqn(source_name: str) -> str:
    """`L['self']._modules['model']._modules['layers']._modules['0']._parameters['weight']` -> FQN."""
    s = re.sub(r"\._(?:modules|parameters|buffers)\['([^']*)'\]", r".\1", source_name)
    s = re.sub(r"\['([^']*)'\]", r".\1", s)
    s = re.sub(r"\[(\d+)\]", r".\1", s)
    s = re.sub(r"^L\.(self|model|mod|m)\b\.?", "", s)
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
    if any(p.name == "sale" and not p.options.get("taus") for p in recipe.passes):
        raise RecipeError(
            "backend='qpass': the sale pass calibrates τ by running the model, which a torch.compile backend "
            "cannot do; give `taus` in its options (e.g. a qpass.compile model's qpass_sale.taus) or use qpass.compile"
        )
    mode = options.get("mode")
    if mode is not None and mode not in _MODES:
        raise RecipeError(f"backend='qpass' options: mode {mode!r} is not one of {', '.join(_MODES)}")
    return recipe, bool(options.get("lower", True)), str(options.get("backend", "inductor")), mode


def qpass_backend(gm: fx.GraphModule, example_inputs, options=None, mode=None):
    """The registered `qpass` Dynamo backend (see the module docstring). `mode=` only arrives without
    `options` (torch.compile refuses both), so the recipe is then missing and the call is refused."""
    from torch._dynamo.backends.registry import lookup_backend

    from .api import run_passes
    from .lowering.lower import Plan, group_size_warning, quantize_transform
    from .lowering.sale import attention_plans

    recipe, lower, inner, inductor_mode = _options(options)
    cap = capture_from_dynamo(gm, example_inputs)
    analysis = analyze(cap)
    selected, _ = select_sites(analysis, recipe)
    params = _Parameters({cap.fqn_of[n]: t for n, t in cap.tensor_of.items()})
    ctx = PassContext(params, recipe, analysis, selected, progress=False)
    # Plans are kept on the live weight tensors, per recipe: a recompilation (new shapes, prefill vs decode)
    # reuses them instead of re-running the passes; they go away with the model.
    key = recipe.to_json()
    cached = {name: getattr(params.get_parameter(site.weight), "_qpass_plans", {}).get((key, name)) for name, site in selected.items()}
    anchor = params.get_parameter(next(iter(selected.values())).weight).__dict__ if selected else {}
    if selected and all(sp is not None for sp in cached.values()):
        ctx.plan.update(cached)
        attention = anchor["_qpass_plans"].get((key, ATTENTION), {})
    else:
        with torch.no_grad():
            run_passes(ctx)
        attention = attention_plans(getattr(params, "qpass_sale", None))  # SALE's τ (given in the recipe)
        for name, site in selected.items():
            w = params.get_parameter(site.weight)
            if name in ctx.plan:
                w.__dict__.setdefault("_qpass_plans", {})[(key, name)] = ctx.plan[name]
        if selected:
            anchor.setdefault("_qpass_plans", {})[(key, ATTENTION)] = attention
    transform = quantize_transform(Plan(ctx.plan, attention=attention), lower)
    transform(cap)
    message = group_size_warning(transform.refused_groups, ctx.plan)
    if message:  # per graph; Python shows a repeated message once
        warnings.warn(message, UserWarning, stacklevel=2)
    gm.graph.lint()
    # A fresh GraphModule over the edited graph: Dynamo's parameter-source table does not list the packed
    # buffers the rewrite added, and AOT autograd would refuse them; the packed tensors are constants anyway.
    gm = fx.GraphModule(gm, gm.graph)
    gm.meta["qpass_lowering"] = dict(transform.outcomes)
    compiler = lookup_backend(inner)
    kwargs = {}
    if inner == "inductor" and inductor_mode not in (None, "default"):
        # inductor takes a mode as its config patches
        from torch._inductor import list_mode_options

        kwargs["config_patches"] = list_mode_options(inductor_mode)
    if not torch.is_grad_enabled():
        return compiler(gm, example_inputs, **kwargs)
    return _inference_under_grad_mode(compiler, gm, example_inputs, kwargs)


def _inference_under_grad_mode(compiler, gm: fx.GraphModule, example_inputs, kwargs):
    """A graph Dynamo captured with grad mode on (the user called the model without torch.no_grad()). The qpass
    kernels and fake-quant ops are inference ops with no autograd formula, so AOT autograd (inductor,
    aot_eager) cannot trace a backward for them: compile the inference graph, and run it without grad. The
    outputs are the same numbers, with no autograd history (`requires_grad=False`). Dynamo guards on grad
    mode, so this graph only serves calls made with grad mode on; no_grad/inference_mode calls get their own."""
    for node in list(gm.graph.nodes):
        # Dynamo records a `with torch.no_grad()` block of the model's forward as _set_grad_enabled(False) ...
        # _set_grad_enabled(True): that restore would turn grad mode back on in the middle of the graph
        if node.op == "call_function" and node.target is torch._C._set_grad_enabled:
            gm.graph.erase_node(node)
    gm.recompile()
    with torch.no_grad():
        compiled = compiler(gm, example_inputs, **kwargs)

    def run(*args):
        with torch.no_grad():
            return compiled(*args)

    return run


def register() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    if "qpass" not in _BACKENDS:
        register_backend(name="qpass")(qpass_backend)
