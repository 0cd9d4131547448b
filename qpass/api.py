"""The public entry points: compile a model with a recipe, and read back what was done."""
from __future__ import annotations

import os
import time
import warnings
from copy import deepcopy
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from .analysis import GraphAnalysis, analyze
from .capture import CompiledGraphs, compile_graphs
from .float_weights import release_float_weights
from .driver import check_calibration, plan_model
from .lowering.lower import group_size_warning, quantize_transform
from .plan import Plan
from .recipe import Recipe, resolve
from .reporting import Report, build_report
from .self_calibration import sample_calibration


@dataclass
class QuantState:
    """What qpass.compile attaches to the model it returns (`qmodel.qpass_state`)."""

    recipe: Recipe
    analysis: GraphAnalysis
    plan: Plan  # every decision: site plans, attention plans, skipped sites, the passes' log
    report: Report
    graph_counter: object  # counts graphs compiled for the quantized forward (the capture's included)
    lowered: bool = False  # quantized linears run qpass.kernels ops (False: the fake-quant reference graph)
    lowering: dict = None  # site (or attention module) -> rule name | "unmatched: why" (filled as graphs compile)
    transform: object = None  # the graph transform the forward was compiled with (qpass.save re-applies it)
    graphs: CompiledGraphs | None = None  # the captured graphs the forward runs (`retransform`: no new trace)


@dataclass
class Capture:
    """The one Dynamo capture `qpass.compile` takes of the model: what the analysis found in it, and its graphs,
    which whole-model calibration and the final (quantizing) transform run through again without tracing."""

    analysis: GraphAnalysis
    graph_count: int  # graphs the capture produced (more than one: graph breaks)
    graphs: CompiledGraphs
    example: torch.Tensor  # the token ids the model was captured on


def _merge(analyses: list[GraphAnalysis]) -> GraphAnalysis:
    return GraphAnalysis(
        [s for a in analyses for s in a.linears],
        [s for a in analyses for s in a.attention],
        [s for a in analyses for s in a.unsupported],
        [s for a in analyses for s in a.experts],
        [s for a in analyses for s in a.embeddings],
    )


def _example_input(model: torch.nn.Module, calib: list[torch.Tensor] | None) -> torch.Tensor:
    """What the capture runs: up to 2 rows x 32 tokens of the first calibration batch (2 rows: a batch of 1 gets
    graphs of its own where the model's code branches on batch == 1, and calibration would trace again), else
    8 seeded random tokens."""
    if calib:
        return calib[0][:2, : min(calib[0].shape[-1], 32)]
    vocab = getattr(getattr(model, "config", None), "vocab_size", 2) or 2
    device = next(model.parameters()).device
    return torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(0)).to(device)


def capture_analysis(model: torch.nn.Module, example: torch.Tensor) -> Capture:
    """Capture `model` with Dynamo on `example` token ids and analyse every graph it produces."""
    analyses: list[GraphAnalysis] = []
    graphs = compile_graphs(model, lambda cap: analyses.append(analyze(cap)))
    with torch.no_grad():
        graphs.forward(input_ids=example, use_cache=False)
    return Capture(_merge(analyses), graphs.counter.graphs, graphs, example)


def compile(
    model: torch.nn.Module,
    recipe: Recipe | dict | str | os.PathLike,
    calib: Iterable[torch.Tensor] | None = None,
    *,
    progress: bool = True,
    lower: bool = True,
    compiler: str | None = None,
    copy: bool = False,
    device: torch.device | str | None = None,
    sequential: bool = True,
) -> torch.nn.Module:
    """`model` quantized, called exactly like it (same outputs types; HF `generate` works).

    `recipe` is a Recipe, a dict (the keys of a YAML/JSON recipe, e.g. `{"weights": {"bits": 4, "group_size":
    128}}`), a preset name (see `qpass.recipes()`) or a YAML/JSON file; `calib` an iterable of
    token-id tensors [B, T], needed by recipes with static activations or data-driven passes.
    `lower=True` replaces the quantized linears by qpass.kernels ops (Triton on CUDA, references on CPU) where
    a lowering rule matches; `lower=False` keeps the fake-quant graph (the accuracy reference).
    `compiler`: None runs the rewritten graphs as FX Python (no compile time; what the tests use); "inductor"
    compiles them (norms, RoPE, residuals fused around the qpass kernels: the fast path on a GPU, as the qpass
    torch.compile backend does), with static shapes (each new input shape compiles its own graph).
    `copy=False` (the default) quantizes `model` itself: no second copy of a large model in memory; its
    forward becomes the quantized one and calibrating passes (qsm, smoothquant) fold factors into its
    parameters. `copy=True` quantizes a deep copy and leaves `model` as it was. Either way the quantized model
    keeps no float copy of a weight it quantized (qpass/float_weights.py: those parameters are released).
    Calibrating recipes run block by block (docs/calibration.md): `device` is where each block computes while
    its weights otherwise stay where they are (default: where the model is); `sequential=False` calibrates the
    whole model at once (the plan's log says when a model or recipe cannot go block by block).
    """
    recipe = resolve(recipe)
    _check_compiler(compiler)
    start = time.perf_counter()
    home = next(model.parameters()).device  # calibration batches go where the model is
    calib = ([torch.as_tensor(b).reshape(-1, torch.as_tensor(b).shape[-1]).to(home) for b in calib]
             if calib is not None else None)
    if not copy and getattr(model, "qpass_state", None) is not None:
        raise ValueError("qpass.compile: this model was already quantized in place by qpass.compile; quantize the "
                         "original with copy=True to keep it, or load a fresh model")
    sampled = None
    c = recipe.calibration
    if calib is None and c.self_generated and recipe.reads_data:
        calib = sample_calibration(model, c.num_samples, c.seq_len, progress=progress)
        sampled = (f"calibration: {c.num_samples} × {c.seq_len} tokens sampled from the model itself (no data "
                   "passed; calibration.self_generated)")
    check_calibration(recipe, calib)  # before copying the model

    qmodel = (deepcopy(model) if copy else model).eval()
    captured = capture_analysis(qmodel, _example_input(qmodel, calib))
    return quantize_captured(qmodel, recipe, captured, calib, progress=progress, lower=lower, compiler=compiler,
                             device=device, sequential=sequential, start=start, log=[sampled] if sampled else [])


def quantize_captured(qmodel: torch.nn.Module, recipe: Recipe, captured: Capture,
                      calib: list[torch.Tensor] | None, *, progress: bool = True, lower: bool = True,
                      compiler: str | None = None, device: torch.device | str | None = None,
                      sequential: bool = True, start: float | None = None, log: Sequence[str] = ()) -> torch.nn.Module:
    """`qpass.compile` after its capture: plan `recipe` on `qmodel` (passes, calibration through the captured
    graphs), then `finish`. `captured` must be `capture_analysis(qmodel, _example_input(qmodel, calib))` of
    `qmodel` as it is now (the coverage matrix quantizes forks of one captured model this way); `calib` as
    `compile` normalizes it; `log` lines go first in the plan's log; `start`: when the report's time starts
    (default: now, so without the capture)."""
    start = time.perf_counter() if start is None else start
    plan = plan_model(qmodel, recipe, captured.analysis, calib=calib, progress=progress, sequential=sequential,
                      device=device, graphs=captured.graphs)
    plan.log[:0] = log
    return finish(qmodel, recipe, captured, plan, lower, start, captured.example, compiler)


def finish(qmodel: torch.nn.Module, recipe: Recipe, captured: Capture, plan: Plan, lower: bool, start: float,
           example: torch.Tensor, compiler: str | None = None) -> torch.nn.Module:
    """Steps 7-10 for a planned model (`qpass.compile`, and `qpass.from_compressed_tensors` with the plan it
    reads from a checkpoint): run the captured graphs through the plan's transform (Q/DQ rewrite, then the
    lowering rules), run the forward once on `example` so the report says which sites were lowered, attach
    `qpass_state`."""
    if plan.attention and not lower:
        plan.log.append("sale: lower=False keeps dense SDPA (SALE runs as the lowered qpass::sale_attention)")
    transform = quantize_transform(plan, lower)
    if compiler:
        # a trace of its own: shapes specialized under an inner compiler (inductor cannot split some views of the
        # int kernels' outputs over symbolic batch x length: CantSplit, torch 2.11); each prompt length compiles once
        graphs = compile_graphs(qmodel, transform, inner=compiler, dynamic=False)
    else:
        graphs = captured.graphs
        graphs.retransform(transform)
    qmodel.forward = graphs.forward
    if lower:  # transform the first graph now, so the report says which sites were lowered
        with torch.no_grad():
            qmodel.forward(input_ids=example, use_cache=False)
        message = group_size_warning(transform.refused_groups, plan)
        if message:  # one warning per compile; the report lists each site with the same reason
            warnings.warn(message, UserWarning, stacklevel=3)
    released, freed = release_float_weights(qmodel, plan)
    if released:
        plan.log.append(f"float weights: {released} quantized sites' float weights released ({freed / 2**20:.1f} MiB): "
                        "the graphs read their integer / packed weights (qpass/float_weights.py)")
    if transform.fused:
        n = sum(len(g) for g in transform.fused)
        plan.log.append(f"sibling fusion: {n} linears run as {len(transform.fused)} kernel calls "
                       f"(same input, row-stacked weights; e.g. {'+'.join(s.rsplit('.', 1)[-1] for s in sorted(transform.fused)[0])})")
    report = build_report(
        recipe.name, captured.analysis, plan, plan.skipped, captured.graph_count, time.perf_counter() - start,
        plan.log, lowering=transform.outcomes if lower else None,
    )
    qmodel.qpass_state = QuantState(recipe, captured.analysis, plan, report, graphs.counter, lower,
                                    transform.outcomes, transform, graphs)
    return qmodel


def _check_compiler(compiler: str | None) -> None:
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if compiler is not None and (compiler not in known or compiler == "qpass"):
        raise ValueError(f"qpass.compile: compiler must be None or a Dynamo backend name such as 'inductor', "
                         f"'aot_eager' or 'eager', got {compiler!r}")


def report(qmodel: torch.nn.Module) -> Report:
    """What qpass.compile did to `qmodel`: quantized sites and schemes, full-precision sites and why."""
    state = getattr(qmodel, "qpass_state", None)
    if state is None:
        raise ValueError("this model was not produced by qpass.compile (it has no qpass_state)")
    return state.report
