"""The one driver: a model (or a graph's parameters), its analysed graph and a recipe -> the Plan.

`qpass.compile`, the `torch.compile` backend and (through qpass.compile) the CLI all plan with `plan_model`:
select the sites, collect the calibration statistics the recipe's passes declare (registry), run the passes in
order on one PassContext, then the quantize step every recipe ends with (weights rounded, RTN or GPTQ, and
input quantization). Everything decided is in the returned Plan; the graph transform reads only that.
"""
from __future__ import annotations

import torch

from .analysis import GraphAnalysis
from .calibrate import calibrate
from .capture import CompiledGraphs
from .experts import plan_experts
from .passes import registry
from .passes.context import PassContext
from .passes.rounding import plan_quantization
from .plan import Plan, select_sites
from .recipe import Recipe
from .sequential import SequentialRefused, plan_sequential
from .sequential import refusal as sequential_refusal


TOKEN_CLIP_SAMPLES = 512


def calibration_statistics(recipe: Recipe) -> dict:
    """The ChannelObserver keyword options the recipe needs: tokens skipped, GPTQ's Hessian, and what each
    pass's registry entry declares (`statistics`), merged (the larger count, any flag)."""
    stats: dict = {"skip_tokens": recipe.calibration.skip_tokens}
    if recipe.weights is not None and recipe.weights.rounding == "gptq":
        stats["hessian"] = True
        if recipe.calibration.sink_hessian_weight:
            stats["sink_weight"] = recipe.calibration.sink_hessian_weight
    if recipe.activations is not None and recipe.activations.clip_search != "none":
        stats["samples"] = TOKEN_CLIP_SAMPLES  # the per-token clip search's calibration tokens per site
    for spec in recipe.passes:
        declared = registry.get(spec.name).statistics
        for k, v in (declared(spec.options) if declared else {}).items():
            stats[k] = (stats.get(k, False) or v) if isinstance(v, bool) else max(stats.get(k, v), v)
    return stats


def check_calibration(recipe: Recipe, calib) -> None:
    """ValueError when the recipe needs calibration data and `calib` holds none."""
    if recipe.needs_calibration and not calib:
        raise ValueError(f"recipe {recipe.name!r} needs calibration data: pass calib=[token ids [B, T], ...]")


def plan_model(model: torch.nn.Module, recipe: Recipe, analysis: GraphAnalysis, *,
               calib: list[torch.Tensor] | None = None, observers: dict | None = None, progress: bool = True,
               sequential: bool = True, device=None, graphs: CompiledGraphs | None = None) -> Plan:
    """Plan `recipe` for `model` (the copy being quantized: passes may edit its parameters) whose captured
    graphs `analysis` describes. `calib`: token-id batches [B, T], required when `recipe.needs_calibration`
    (calibration runs `model`). Sites the recipe ignores, or that cannot be quantized (NaN/inf, GPTQ failure),
    are in `plan.skipped` with the reason. `observers`: statistics collected before ({site: ChannelObserver}
    with what `calibration_statistics(recipe)` asks for, and the recipe's percentile when its observer is one),
    instead of calibrating here (ablations reuse them).

    A calibrating recipe is planned block by block (`qpass/sequential.py`; `device`: where each block computes)
    unless `sequential=False` or the path does not apply — the plan's log then says why the whole model was
    calibrated at once, through `graphs` (the model's captured forward, transformed again: no new trace) when
    given."""
    selected, skipped = select_sites(analysis, recipe.ignore)
    if not observers:
        check_calibration(recipe, calib)
        observers = {}
    a = recipe.activations
    percentile = a.percentile if a is not None and a.observer == "percentile" else None
    whole_log = []
    if recipe.needs_calibration and not observers:
        why = sequential_refusal(model, recipe, analysis, selected) if sequential else "sequential=False"
        if why is None:
            try:
                return plan_sequential(model, recipe, analysis, selected, skipped, calib, device=device,
                                       percentile=percentile, stats=calibration_statistics(recipe), progress=progress)
            except SequentialRefused as e:  # raised before anything was changed
                why = str(e)
        whole_log.append(f"calibration: whole model at once (not block by block: {why})")
    expert_tokens = {} if analysis.experts else None  # calibration coverage of each expert
    ctx = PassContext(model, recipe.weights, recipe.activations, analysis, selected,
                      Plan(skipped=skipped, log=whole_log), {}, progress, calib)
    with torch.no_grad():  # e.g. rotate: what calibration measures must be the model it made
        registry.run_passes(ctx, recipe.passes, before_calibration=True)
    if recipe.needs_calibration and not observers:
        observers = calibrate(model, calib, set(ctx.sites), percentile, progress, expert_tokens=expert_tokens,
                              rotations=ctx.plan.rotations, graphs=graphs, **calibration_statistics(recipe))
    if observers:
        ctx.observers = observers
        ctx.screen()
    with torch.no_grad():
        registry.run_passes(ctx, recipe.passes, before_calibration=False)
        plan_quantization(ctx)
        plan_experts(model, recipe, analysis, ctx.plan, expert_tokens)
    if observers and selected:  # calibrated passes computed on the CPU (PassContext.weight); kernels run here
        ctx.plan.to_device(model.get_parameter(next(iter(selected.values())).weight).device)
    return ctx.plan
