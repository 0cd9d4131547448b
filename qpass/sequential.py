"""Block-by-block (sequential) calibration: the calibrating recipes' default path (docs/calibration.md).

The repeated blocks are found from the model and the selected sites (the nn.ModuleList whose children hold the
most of them), never from a per-architecture table. Block 0's inputs (args and kwargs: hidden states, position
embeddings, masks) are caught by a pre-hook that stops the forward; then each block in turn moves to the compute
device, its sites are observed on the cached inputs (hooks on the linear modules), the recipe's passes and the
quantize step plan its sites only, and its outputs are computed WITH its quantization applied (the same
fake-quant ops as the graph rewrite) to feed the next block, as GPTQ and llm-compressor do. The block then moves
back where it was. One block's activations (its inputs and outputs) are held at a time. Sites outside the blocks
(an lm_head that is not ignored) are planned last, on the final hidden states run through the model's tail.

The result is the same Plan the whole-model path builds; `refusal` says when this path cannot apply (the driver
then calibrates the whole model at once and logs why).
"""
from __future__ import annotations

import functools
import resource
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .analysis import GraphAnalysis, LinearSite
from .calibrate import ChannelObserver
from .lowering.qdq import fake_quant_linear
from .passes import registry
from .passes.context import PassContext
from .passes.rounding import plan_quantization
from .plan import Plan
from .recipe import Recipe
from .rotation import online_rotation_hooks


@dataclass
class BlockRecord:
    """Time and memory of one block (or of the tail after the last block), for the report."""

    name: str
    sites: int
    seconds: float
    peak_rss_mb: float  # the process's peak resident memory so far (ru_maxrss)
    peak_gpu_mb: float | None  # torch.cuda.max_memory_allocated during this block (CUDA compute only)
    held_activation_mb: float  # cached block inputs + outputs held while this block ran (all batches)

    def describe(self) -> str:
        gpu = f", peak GPU {self.peak_gpu_mb:.0f} MB" if self.peak_gpu_mb is not None else ""
        return (f"{self.name}: {self.sites} sites, {self.seconds:.1f} s, peak RSS {self.peak_rss_mb:.0f} MB{gpu}, "
                f"activations held {self.held_activation_mb:.1f} MB")


class SequentialRefused(Exception):
    """The block-by-block path cannot apply to this model and recipe (the message says why)."""


class _Caught(Exception):
    """Raised by block 0's pre-hook: its inputs are cached, the rest of the forward is not needed."""


def find_blocks(model: torch.nn.Module, sites: dict[str, LinearSite]) -> str | None:
    """Path of the nn.ModuleList whose children hold the most selected sites (the outermost on a tie), or None."""
    best, best_n = None, 0
    for path, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 1:
            n = sum(1 for s in sites if s.startswith(f"{path}.") and s[len(path) + 1:].split(".")[0].isdigit())
            if n > best_n:
                best, best_n = path, n
    return best


def _linear_module(model: torch.nn.Module, site: LinearSite) -> str | None:
    """Why `site` cannot be observed and replaced through its module's hooks, or None: the module at its name
    must compute exactly `linear(input, weight, bias)` on its own weight (nn.Linear, or a transposed Conv1D)."""
    try:
        mod = model.get_submodule(site.name)
    except AttributeError:
        return f"{site.name} is not a module"
    if site.weight != f"{site.name}.weight":
        return f"{site.name} reads {site.weight}, not its own weight"
    if isinstance(mod, torch.nn.Linear) and not site.transposed:
        return None
    if site.transposed and site.op == "addmm" and type(mod).__name__ == "Conv1D":  # GPT-2's [in, out] linear
        return None
    return f"{site.name} is a {type(mod).__name__} whose input is not known to be the linear's"


def refusal(model: torch.nn.Module, recipe: Recipe, analysis: GraphAnalysis, selected: dict[str, LinearSite]) -> str | None:
    """Why `recipe` on `model` cannot be calibrated block by block, or None when it can."""
    if analysis.experts:
        return "mixture-of-experts layers: expert token counts are collected over the whole model"
    for spec in recipe.passes:
        info = registry.get(spec.name)
        if info.runs_model is not None and info.runs_model(spec.options):
            return f"pass {spec.name!r} runs the whole model on its own calibration text"
        if not info.per_block:  # mixed_precision: one bit budget over every block
            return f"pass {spec.name!r} plans every block at once"
    if not selected:
        return "no selected sites"
    path = find_blocks(model, selected)
    if path is None:
        return "no nn.ModuleList of repeated blocks holds the selected sites"
    for site in selected.values():
        why = _linear_module(model, site)
        if why is not None:
            return why
    return None


def _to(obj, device: torch.device):
    """Tensors in nested tuples / lists / dicts moved to `device` (anything else as is)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    return 0


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    raise SequentialRefused("the first block's hidden states are neither its first argument nor `hidden_states`")


def _with_hidden(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args and isinstance(args[0], torch.Tensor):
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _output_hidden(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def catch_inputs(model: torch.nn.Module, first: torch.nn.Module, calib: list[torch.Tensor],
                 device: torch.device) -> list[tuple[tuple, dict]]:
    """Block 0's (args, kwargs) for each calibration batch, on `device`; the forward stops at block 0."""
    caught = []

    def hook(module, args, kwargs):
        caught.append((_to(args, device), _to(kwargs, device)))
        raise _Caught

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in calib:
            try:
                model(input_ids=ids, use_cache=False)
            except _Caught:
                continue
            raise SequentialRefused("the model's forward never called its first block")
    finally:
        handle.remove()
    _hidden(*caught[0])
    return caught


def _observe(model: torch.nn.Module, sites: dict[str, LinearSite], device: torch.device, percentile, stats: dict,
             run) -> dict[str, ChannelObserver]:
    """Observers on `sites`' inputs (module pre-hooks) while `run()` runs. Sites reading one tensor (q/k/v,
    gate/up) share one observer, as in the whole-model path (calibrate.insert_observers)."""
    observers: dict[str, ChannelObserver] = {}
    shared: dict = {}
    handles = []
    for site in sites.values():
        key = site.input if site.input is not None else site.name
        obs = shared.get(key)
        if obs is not None and obs.channels == site.in_features:
            observers[site.name] = obs
            continue
        obs = ChannelObserver(site.in_features, percentile, device=device, **stats)
        observers[site.name] = shared[key] = obs
        module = model.get_submodule(site.name)
        handles.append(module.register_forward_pre_hook(lambda m, args, obs=obs: obs.update(args[0])))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return observers


def _quantized_forward(module: torch.nn.Module, x: torch.Tensor, *, sp, transposed: bool) -> torch.Tensor:
    return fake_quant_linear(x, sp, module.weight, module.bias, transposed)


class _planned:
    """Context: the planned site modules of `plan` compute their fake-quant linear (lowering/qdq.py)."""

    def __init__(self, model: torch.nn.Module, plan: Plan, sites: dict[str, LinearSite]):
        self.modules = []
        for name, sp in plan.sites.items():
            if sp.weight is None and sp.activation is None and sp.input_step is None:
                continue
            mod = model.get_submodule(name)
            self.modules.append((mod, functools.partial(_quantized_forward, mod, sp=sp,
                                                         transposed=sites[name].transposed)))

    def __enter__(self):
        self.saved = [_set_forward(mod, fwd) for mod, fwd in self.modules]

    def __exit__(self, *exc):
        for (mod, _), saved in zip(self.modules, self.saved):
            _restore_forward(mod, saved)


_CLASS_FORWARD = object()


def _set_forward(mod: torch.nn.Module, fwd):
    """Shadow `mod`'s forward with an instance attribute; returns what to restore (an instance forward already
    there, e.g. accelerate's hook wrapper, or the marker for the class's own)."""
    saved = vars(mod).get("forward", _CLASS_FORWARD)
    mod.forward = fwd
    return saved


def _restore_forward(mod: torch.nn.Module, saved) -> None:
    if saved is _CLASS_FORWARD:
        del mod.forward
    else:
        mod.forward = saved


@dataclass
class _Calibration:
    """What every block's turn shares: the model, the recipe and its analysis, the plan being filled, and how
    observers are made (where blocks compute, the percentile, ChannelObserver's statistics)."""

    model: torch.nn.Module
    recipe: Recipe
    analysis: GraphAnalysis
    plan: Plan
    calib: list[torch.Tensor]
    device: torch.device | None  # None: each block computes where it lives
    percentile: float | None
    stats: dict
    progress: bool

    def observe(self, sites: dict[str, LinearSite], device: torch.device, run) -> dict[str, ChannelObserver]:
        return _observe(self.model, sites, device, self.percentile, self.stats, run)

    def run_passes(self, sites: dict, observers: dict) -> Plan:
        """The recipe's passes after calibration and the quantize step, on `sites` only."""
        r = self.recipe
        ctx = PassContext(self.model, r.weights, r.activations, self.analysis, dict(sites), Plan(), observers,
                          self.progress, rotated_online=frozenset(self.plan.rotations))
        registry.run_passes(ctx, r.passes, before_calibration=False)  # rotate ran over the whole model first
        plan_quantization(ctx)
        return ctx.plan


def _merge(plan: Plan, part: Plan, label: str) -> None:
    plan.sites.update(part.sites)
    plan.skipped.update(part.skipped)
    plan.attention.update(part.attention)
    plan.log.extend(f"[{label}] {line}" for line in part.log)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


@torch.no_grad()
def plan_sequential(model: torch.nn.Module, recipe: Recipe, analysis: GraphAnalysis, selected: dict[str, LinearSite],
                    skipped: dict[str, str], calib: list[torch.Tensor], *, device=None, percentile=None,
                    stats: dict | None = None, progress: bool = True) -> Plan:
    """The Plan of `recipe` for `model`, calibrated block by block (module docstring). `device`: where each block
    computes (default: where the model's blocks are); the blocks go back where they were after their turn.
    Raises SequentialRefused before anything is changed when the model's forward does not fit the path."""
    stats = stats or {}
    path = find_blocks(model, selected)
    blocks = model.get_submodule(path)
    device = torch.device(device) if device is not None else None
    plan = Plan(skipped=dict(skipped))
    compute_home = device or _home(blocks[0])
    inputs = catch_inputs(model, blocks[0], calib, compute_home)  # may refuse: nothing is changed before this
    if any(registry.get(s.name).before_calibration for s in recipe.passes):
        # e.g. rotate: the whole model once, then block 0's inputs again from what it made
        ctx = PassContext(model, recipe.weights, recipe.activations, analysis, dict(selected), plan, {}, progress, calib)
        registry.run_passes(ctx, recipe.passes, before_calibration=True)
        inputs = catch_inputs(model, blocks[0], calib, compute_home)
    where = str(device) if device is not None else ", ".join(sorted({str(_home(b)) for b in blocks}))
    plan.log.append(f"calibration: block by block over {len(blocks)} blocks of {path} on {where} "
                    f"(each block's quantized outputs feed the next)")
    run = _Calibration(model, recipe, analysis, plan, calib, device, percentile, stats, progress)
    with online_rotation_hooks(model, plan.rotations):  # observers and quantized forwards see rotated inputs
        _plan_blocks(run, selected, blocks, path, inputs)
    return plan


def _plan_blocks(run: _Calibration, selected: dict[str, LinearSite], blocks, path: str, inputs: list) -> None:
    model, plan = run.model, run.plan
    last_out = None
    bar = tqdm(range(len(blocks)), desc="blocks", unit="block", disable=not run.progress)
    for i in bar:
        start = time.perf_counter()
        block, label = blocks[i], f"{path}.{i}"
        home = _home(block)  # blocks dispatched over several GPUs (accelerate) each compute on their own
        compute = run.device or home
        cuda = compute.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(compute)
        sites = {n: s for n, s in selected.items() if n.startswith(label + ".")}
        block.to(compute)
        inputs = _to(inputs, compute)
        observers = run.observe(sites, compute, lambda: [block(*a, **kw) for a, kw in inputs]) if sites else {}
        part = run.run_passes(sites, observers) if sites else Plan()
        _merge(plan, part, label)
        del observers
        with _planned(model, part, sites):
            outputs = []
            for a, kw in inputs:
                last_out = block(*a, **kw)
                outputs.append(_output_hidden(last_out))
        held = _nbytes(inputs) + _nbytes(outputs)
        inputs = [_with_hidden(a, kw, h) for (a, kw), h in zip(inputs, outputs)]
        del outputs
        block.to(home)
        part.to_device(home)  # packed weights wait with the model: the compute device holds one block at a time
        plan.blocks.append(BlockRecord(label, len(sites), time.perf_counter() - start, _peak_rss_mb(),
                                       torch.cuda.max_memory_allocated(compute) / 2**20 if cuda else None, held / 2**20))
    outer = {n: s for n, s in selected.items() if not n.startswith(path + ".")}
    if outer:
        _plan_tail(run, blocks, outer, inputs, last_out)


def _home(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _plan_tail(run: _Calibration, blocks, outer: dict[str, LinearSite], inputs: list, last_out) -> None:
    """Plan the sites outside the blocks (e.g. an lm_head that is not ignored): the model runs again with every
    block replaced by a pass-through that returns the final hidden states (block 0) or its input (the rest), so
    only the model's own head computes, on its own device."""
    start = time.perf_counter()
    home = next(blocks[0].parameters()).device
    finals = iter([_hidden(a, kw).to(home) for a, kw in inputs])
    n = len(last_out) if isinstance(last_out, (tuple, list)) else 0
    wrap = (lambda h: (h, *([None] * (n - 1)))) if n else (lambda h: h)

    def first(*args, **kwargs):
        return wrap(next(finals))

    def rest(*args, **kwargs):
        return wrap(_hidden(args, kwargs))

    model = run.model
    saved = [_set_forward(b, first if i == 0 else rest) for i, b in enumerate(blocks)]
    there = model.get_parameter(next(iter(outer.values())).weight).device  # where those sites' kernels run
    try:
        observers = run.observe(outer, run.device or there,
                                lambda: [model(input_ids=ids, use_cache=False) for ids in run.calib])
    finally:
        for b, s in zip(blocks, saved):
            _restore_forward(b, s)
    part = run.run_passes(outer, observers)
    part.to_device(there)
    _merge(run.plan, part, "after the blocks")
    run.plan.blocks.append(BlockRecord("after the blocks", len(outer), time.perf_counter() - start, _peak_rss_mb(), None,
                                   _nbytes(inputs) / 2**20))
