"""Model -> FX graph. TorchDynamo is the one capture path for compiling; torch.export for export.

A *graph transform* is `transform(graph: CapturedGraph) -> None`: it edits `graph.gm` in place. `compile_forward`
installs a Dynamo backend that captures each graph Dynamo produces (the first call, and any recompilation for new
shapes), names its parameter placeholders, runs the transform and returns the edited GraphModule to run.
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx

# Linear-like call targets as Dynamo (torch-level) and torch.export (aten-level) spell them.
LINEAR_TARGETS = (torch._C._nn.linear, torch.nn.functional.linear, torch.ops.aten.linear.default)
ADDMM_TARGETS = (torch.addmm, torch.ops.aten.addmm.default)
MATMUL_TARGETS = (torch.matmul, torch.ops.aten.matmul.default, torch.mm, torch.ops.aten.mm.default)
SDPA_TARGETS = (
    torch._C._nn.scaled_dot_product_attention,
    torch.nn.functional.scaled_dot_product_attention,
    torch.ops.aten.scaled_dot_product_attention.default,
)
EMBEDDING_TARGETS = (torch.nn.functional.embedding, torch.ops.aten.embedding.default)


@dataclass
class CapturedGraph:
    """One captured FX graph with its placeholders mapped to the model's parameter/buffer names."""

    gm: fx.GraphModule
    tensor_of: dict[fx.Node, torch.Tensor] = field(default_factory=dict)  # placeholder -> live tensor
    fqn_of: dict[fx.Node, str] = field(default_factory=dict)  # placeholder -> parameter/buffer FQN

    @property
    def graph(self) -> fx.Graph:
        return self.gm.graph


def tensor_names(model: torch.nn.Module) -> dict[int, str]:
    """id(tensor) -> its first FQN among the model's parameters and buffers (tied weights keep their first name)."""
    names: dict[int, str] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    ):
        names.setdefault(id(t), name)
    return names


def bind_placeholders(gm: fx.GraphModule, example_inputs, names: dict[int, str]) -> CapturedGraph:
    cap = CapturedGraph(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, example_inputs):
        if isinstance(value, torch.Tensor):
            cap.tensor_of[node] = value
            if id(value) in names:
                cap.fqn_of[node] = names[id(value)]
    return cap


_GUARD_PREFIX = re.compile(r"^(L\[[^\]]*\](\[\d+\])*|L__self__|self)\.?")


def module_path(node: fx.Node) -> str:
    """The dotted path of the innermost module that produced `node` (e.g. `model.layers.0.mlp.up_proj`)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    raw = list(stack.values())[-1][0]
    raw = _GUARD_PREFIX.sub("", raw)
    raw = re.sub(r"\._modules\['([^']*)'\]", r".\1", raw)
    raw = re.sub(r"\['([^']*)'\]", r".\1", raw)
    raw = re.sub(r"\[(\d+)\]", r".\1", raw)
    return raw.strip(".")


def node_value(node) -> torch.Tensor | None:
    """The (fake) example value Dynamo or export recorded for a node."""
    if not isinstance(node, fx.Node):
        return None
    v = node.meta.get("example_value", node.meta.get("val"))
    return v if isinstance(v, torch.Tensor) else None


class GraphCounter:
    """How many graphs a backend compiled (graph breaks and recompilations both add one)."""

    def __init__(self):
        self.graphs = 0


def make_backend(model: torch.nn.Module, transform: Callable[[CapturedGraph], None], counter: GraphCounter):
    names = tensor_names(model)

    def backend(gm: fx.GraphModule, example_inputs):
        # Names are re-read on each compilation: passes may have registered new tensors since.
        names.update(tensor_names(model))
        cap = bind_placeholders(gm, example_inputs, names)
        transform(cap)
        gm.graph.lint()
        gm.recompile()
        counter.graphs += 1
        return gm.forward

    return backend


def compile_forward(
    model: torch.nn.Module,
    transform: Callable[[CapturedGraph], None],
    *,
    fullgraph: bool = False,
    dynamic: bool | None = None,
) -> tuple[Callable, GraphCounter]:
    """A compiled version of `model.forward` whose graphs pass through `transform`.

    The returned function has its own code object, so its Dynamo cache (and recompile budget) belongs to this
    model alone: two quantized copies of one architecture never share or exhaust each other's compiled graphs.
    """
    counter = GraphCounter()
    bound = model.forward
    base = type(model).forward

    def forward(*args, **kwargs):
        return base(model, *args, **kwargs)

    forward.__code__ = forward.__code__.replace()  # a fresh code object -> a fresh Dynamo cache
    functools.update_wrapper(forward, base)
    forward.__signature__ = inspect.signature(bound)  # HF inspects forward's parameters (generate)
    del forward.__wrapped__
    compiled = torch.compile(forward, backend=make_backend(model, transform, counter), fullgraph=fullgraph, dynamic=dynamic)
    return compiled, counter


def export_graph(model: torch.nn.Module, input_ids: torch.Tensor, dynamic: bool = False):
    """(ExportedProgram, CapturedGraph) through torch.export (non-strict) — the capture path for export.

    The graph is pre-dispatch ATen (`aten.linear.default`, `aten.scaled_dot_product_attention.default` kept);
    parameter placeholders are named from the graph signature. Export aliases live parameters: clone before
    folding anything into them.
    """
    from torch.export import Dim, export

    shapes = {"input_ids": {0: Dim("batch"), 1: Dim("seq")}, "use_cache": None} if dynamic else None
    ep = export(model, (), {"input_ids": input_ids, "use_cache": False}, strict=False, dynamic_shapes=shapes)
    cap = CapturedGraph(ep.graph_module)
    names = tensor_names(model)  # tied weights get the same first name on both capture paths
    placeholders = {n.name: n for n in ep.graph_module.graph.nodes if n.op == "placeholder"}
    for spec in ep.graph_signature.input_specs:
        node = placeholders.get(spec.arg.name)
        if node is not None and spec.target is not None:
            value = ep.state_dict.get(spec.target, ep.constants.get(spec.target))
            if isinstance(value, torch.Tensor):
                cap.tensor_of[node], cap.fqn_of[node] = value, names.get(id(value), spec.target)
    return ep, cap
