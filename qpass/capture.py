"""Model -> FX graph. TorchDynamo is the one capture path for compiling; torch.export for export.

A *graph transform* is `transform(graph: CapturedGraph) -> None`: it edits `graph.gm` in place. `compile_graphs`
(and `compile_forward`, its forward alone) installs a Dynamo backend that captures each graph Dynamo produces (the
first call, and any recompilation for new shapes), names its parameter placeholders, runs the transform and returns
the edited GraphModule to run; `CompiledGraphs.retransform` runs the same captured graphs through another
transform, without a new trace.
"""
from __future__ import annotations

import copy
import functools
import inspect
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
import torch.fx.experimental._config as fx_config

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
    _prefix: str | None = field(default=None, repr=False)

    @property
    def graph(self) -> fx.Graph:
        return self.gm.graph

    def module_path(self, node: fx.Node) -> str:
        """The model-level dotted path of the module that produced `node` (`module_path`, plus the root prefix
        of this graph's frame)."""
        path = module_path(node)
        return self.root_prefix() + path if path else ""

    def root_prefix(self) -> str:
        """Where this graph's frame sits in the model: "" for the model's own forward; "model." for a frame of
        the inner `LlamaModel` (Dynamo compiles the frames after a graph break in the model's code through the
        same backend, and their module stacks are relative to that frame). Read off the parameters: a weight's
        FQN (from tensor identity, model-level) ends with its user's module path plus the parameter name."""
        if self._prefix is None:
            votes: Counter = Counter()
            for node, fqn in self.fqn_of.items():
                owner = fqn.rsplit(".", 1)[0] if "." in fqn else ""
                for user in node.users:
                    path = module_path(user)
                    if path and (owner == path or owner.endswith("." + path)):
                        votes[owner[: len(owner) - len(path)]] += 1
            self._prefix = votes.most_common(1)[0][0] if votes else ""
        return self._prefix


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
    # a module reached through its own wrapped bound method (accelerate's hooks keep `forward` as
    # `module._old_forward`, and Dynamo names the module `..._old_forward.__self__`): the module itself
    raw = re.sub(r"\.\w+\.__self__(?=\.|$)", "", raw)
    return raw.strip(".")


def node_value(node) -> torch.Tensor | None:
    """The (fake) example value Dynamo or export recorded for a node."""
    if not isinstance(node, fx.Node):
        return None
    v = node.meta.get("example_value", node.meta.get("val"))
    return v if isinstance(v, torch.Tensor) else None


class GraphCounter:
    """How many graphs a backend compiled (graph breaks and recompilations both add one), and how many calls of
    the compiled forward ran (every one through a compiled graph: a fallback raises `EagerFallbackError`)."""

    def __init__(self):
        self.graphs = 0
        self.calls = 0


class EagerFallbackError(RuntimeError):
    """Dynamo ran the model's original forward instead of a graph compiled through qpass's backend.

    That forward is the full-precision model: running it would silently return unquantized outputs, so the
    compiled forward raises this instead (recompile limit hit, a Dynamo error it recovered from by running the
    frame eagerly, or torch.compile disabled, e.g. TORCHDYNAMO_DISABLE=1 or `set_stance("force_eager")`)."""


@dataclass
class _Graph:
    raw: fx.GraphModule  # as Dynamo captured it: each transform edits a fresh copy
    run: Callable | None  # the transformed graph; None: transform a copy at the next call


class CompiledGraphs:
    """The graphs Dynamo captured from one model's forward, each run through a graph transform, and kept
    untransformed too: `retransform` swaps the transform without tracing the model again. `qpass.compile` analyses,
    calibrates and quantizes through one capture this way (a trace costs far more than a transform).

    `forward` is the compiled forward (`compile_graphs`), `counter` its GraphCounter. Each new graph Dynamo hands
    the backend (the first call, a new kind of call, each side of a graph break) is transformed at once, on the
    tensors it was captured with; after `retransform(t)` every graph is transformed again from its untransformed
    copy at its next call, on the tensors that call passes (passes may have replaced parameters since the capture:
    Dynamo's guards accept a same-shaped replacement and pass it in). Whatever the guards reject is traced again,
    through the current transform. With an inner compiler (`inner`, e.g. "inductor") graphs are compiled once and
    cannot be transformed again."""

    def __init__(self, model: torch.nn.Module, transform: Callable[[CapturedGraph], None], inner: str | None = None):
        self.model = model
        self.transform = transform
        self.inner = inner
        self.counter = GraphCounter()
        self.forward: Callable | None = None  # set by compile_graphs
        self._names = tensor_names(model)
        self._graphs: list[_Graph] = []

    def retransform(self, transform: Callable[[CapturedGraph], None]) -> None:
        """Run every captured graph through `transform` (on a fresh copy of it as captured) from its next call on."""
        if self.inner is not None:
            raise ValueError(f"graphs compiled by the inner compiler {self.inner!r} cannot be transformed again")
        self.transform = transform
        for graph in self._graphs:  # freed now: what the old transform put in (observers, packed weights)
            graph.run = None

    def backend(self, gm: fx.GraphModule, example_inputs):
        """The Dynamo backend: `gm` through the current transform, then run as FX Python (`inner` None) or
        compiled by the Dynamo backend named `inner`."""
        raw = None if self.inner else fx.GraphModule(gm, copy.deepcopy(gm.graph))  # before the transform edits gm
        transformed = self._transformed(gm, example_inputs)
        self.counter.graphs += 1
        if raw is None:
            return transformed
        graph = _Graph(raw, transformed)
        self._graphs.append(graph)

        def run(*inputs):
            if graph.run is None:
                graph.run = self._transformed(fx.GraphModule(raw, copy.deepcopy(raw.graph)), inputs)
            return graph.run(*inputs)

        return run

    def _transformed(self, gm: fx.GraphModule, inputs) -> Callable:
        # Names are re-read on each transform: passes may have registered new tensors since.
        self._names.update(tensor_names(self.model))
        self.transform(bind_placeholders(gm, inputs, self._names))
        gm.graph.lint()
        gm.recompile()
        if self.inner is None:
            return gm.forward
        from .inner import compile_inner

        # a fresh GraphModule: Dynamo's parameter-source table does not list the packed buffers the rewrite added
        return compile_inner(fx.GraphModule(gm, gm.graph), inputs, self.inner)


# Inputs of HF causal-LM forwards with a batch and sequence-length dim: name -> (batch dim or None, length dims).
DYNAMIC_DIMS = {
    "input_ids": (0, (1,)), "attention_mask": (0, (1,)), "position_ids": (0, (1,)), "inputs_embeds": (0, (1,)),
    "token_type_ids": (0, (1,)), "labels": (0, (1,)), "cache_position": (None, (0,)),
}
CACHE_DIMS = (0, (2,))  # K / V cache tensors [B, H_kv, L, D]: batch and cached length
CACHE_ARGUMENTS = ("past_key_values", "cache")  # the K/V cache's keyword, by transformers version
# Graphs one compiled forward may hold (the global `recompile_limit` default is 8, patched per call). With
# batch and sequence dynamic, graphs are added per *kind* of call: prefill / decode x use_cache, an empty or
# filled cache, other keyword arguments, grad mode — HF `generate` next to plain calls takes ~6.
RECOMPILE_LIMIT = 32
# Numbers the compiled forwards' code objects: Dynamo keeps automatic-dynamic (PGO) state per (file, line, code
# name, closure) — shared by every model of one class unless the name differs.
_FORWARD_IDS = itertools.count()


def tracing_config(dynamic: bool, **dynamo_config):
    """The scoped Dynamo settings a qpass trace (Dynamo capture, torch.export) runs under: `dynamo_config`, and
    with symbolic shapes (`dynamic`) FakeTensor's dispatch cache off. On a cache hit with symbolic shapes torch
    rebuilds the output's symbolic sizes, strides and storage (pytorch#191500, #192047), which costs more than
    the meta kernel it saves: off, a tiny Gemma 2's capture takes 3.4 s instead of 4.4 s and qpass.save 6.9 s
    instead of 9.6 s (torch 2.13, CPU). With static shapes the cache pays (two new shapes of a tiny Llama under
    aot_eager: 5.0 s with it, 5.8 s without), so it is left as it is. Outputs are the same either way."""
    import torch._dynamo

    if dynamic:
        dynamo_config["fake_tensor_cache_enabled"] = False
    return torch._dynamo.config.patch(**dynamo_config)


def _mark(t, dims) -> None:
    """The batch dim of `t` dynamic (batch 1 included: the compiled call runs with backed_size_oblivious, so a
    size-1 batch is not specialized), and each length dim when longer than 1. A length-1 sequence (a decode step)
    stays static: HF computes `is_causal = q_length > 1 and ...`, which a symbolic length 1 would turn into a
    SymBool handed to SDPA; decode and prefill take different code paths anyway."""
    if not isinstance(t, torch.Tensor):
        return
    batch, lengths = dims
    if batch is not None and batch < t.dim():
        torch._dynamo.maybe_mark_dynamic(t, batch)
    for d in lengths:
        if d < t.dim():  # static at 1 even after Dynamo has seen the length vary (its automatic dynamic)
            (torch._dynamo.maybe_mark_dynamic if t.shape[d] > 1 else torch._dynamo.mark_static)(t, d)


def mark_dynamic_inputs(arguments: dict) -> None:
    """Mark batch and sequence dims of a forward's inputs (and of a K/V cache's tensors, under either name HF
    uses for it) dynamic, so that Dynamo compiles one graph per kind of call instead of one per shape."""
    for name, dims in DYNAMIC_DIMS.items():
        _mark(arguments.get(name), dims)
    for key in CACHE_ARGUMENTS:
        for layer in getattr(arguments.get(key), "layers", None) or ():
            for attr in ("keys", "values"):
                t = getattr(layer, attr, None)
                if isinstance(t, torch.Tensor) and t.dim() == 4:
                    _mark(t, CACHE_DIMS)


def _fresh_aliases(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's tensors as fresh views of themselves. `maybe_mark_dynamic` marks a tensor object for good, and
    Dynamo honours the mark even under `dynamic=False`: a tensor once passed to a dynamic qpass forward (the
    capture's example, a calibration batch) would trace symbolic shapes here again — where inductor then failed
    to split a view of the int kernels' outputs over symbolic batch x length (CantSplit, torch 2.11). A view is
    a new object without the marks; it shares the storage, so nothing is copied."""
    alias = lambda v: v.view_as(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return tuple(alias(v) for v in args), {k: alias(v) for k, v in kwargs.items()}


def compile_forward(model: torch.nn.Module, transform: Callable[[CapturedGraph], None], **options
                    ) -> tuple[Callable, GraphCounter]:
    """(forward, counter) of `compile_graphs(model, transform, **options)`."""
    graphs = compile_graphs(model, transform, **options)
    return graphs.forward, graphs.counter


def compile_graphs(
    model: torch.nn.Module,
    transform: Callable[[CapturedGraph], None],
    *,
    fullgraph: bool = False,
    dynamic: bool | None = None,
    recompile_limit: int | None = RECOMPILE_LIMIT,
    inner: str | None = None,
) -> CompiledGraphs:
    """A compiled version of `model.forward` (`.forward`) whose graphs pass through `transform` (then, with
    `inner`, through that Dynamo backend, e.g. "inductor": the unquantized rest of the graph fused and compiled);
    `.retransform` runs the captured graphs through another transform without tracing again (CompiledGraphs).

    The returned function has its own code object and code name, so its Dynamo cache, recompile budget and
    automatic-dynamic state belong to this model alone: two quantized copies of one architecture never share or
    exhaust each other's compiled graphs, nor add guards to each other's.

    Shapes: before each call the batch and sequence dims of the inputs (`input_ids`, `attention_mask`,
    `position_ids`, `inputs_embeds`, ..., and the K/V tensors of an HF cache's layers) are marked dynamic
    (`torch._dynamo.maybe_mark_dynamic`), so one graph serves every batch size and length: the call runs with
    `torch.fx.experimental._config.backed_size_oblivious` patched on (scoped, as vLLM compiles), so a batch of 1
    is not specialized; a length of 1 is (see `_mark`). A model called with batch 1-64 x length 1-2048 compiles
    two graphs, prefill and one-token decode, plus one per other change Dynamo guards on (other keyword
    arguments, grad mode, a cache's first use). Where the model's own code branches on batch == 1, batch 1
    still gets graphs of its own: torch < 2.13's SDPA shape function does, and HF's packed-sequence check for a
    call with neither a cache nor an attention mask.

    Never silently unquantized: when Dynamo does not run a graph compiled through `transform` — the recompile
    limit (`recompile_limit`, this compiled function's own, default `RECOMPILE_LIMIT` = 32; None = the global
    `torch._dynamo.config.recompile_limit`, 8) is hit, Dynamo recovered from an error by running the frame
    eagerly, or torch.compile is disabled (TORCHDYNAMO_DISABLE=1, `torch.compiler.set_stance("force_eager")`)
    — it would run the model's original full-precision forward. The compiled forward raises
    `EagerFallbackError` instead: the wrapper Dynamo compiles checks `torch.compiler.is_compiling()` first,
    which is constant True in every traced graph and False only when the frame runs as plain Python. The graphs
    compiled so far stay cached, so calls of kinds seen before keep working. No global torch config is changed;
    `counter.calls` counts the calls that ran a compiled graph. Limit: with graph breaks *inside* the model,
    the frames after a break are Dynamo frames of the model's own code, which this check does not cover.
    """
    import torch._dynamo

    graphs = CompiledGraphs(model, transform, inner)
    counter = graphs.counter
    bound = model.forward
    base = type(model).forward
    limit = recompile_limit if recompile_limit is not None else torch._dynamo.config.recompile_limit
    signature = inspect.signature(bound)

    def forward(*args, **kwargs):
        # Constant True while Dynamo traces this frame (the check is not in the graph); False only when the
        # frame runs as plain Python, i.e. Dynamo fell back to the original (unquantized) forward.
        if not torch.compiler.is_compiling():
            raise EagerFallbackError(
                f"qpass: Dynamo fell back to the original full-precision forward of {type(model).__name__} "
                f"instead of a qpass-compiled graph; refusing to run it unquantized. Input shapes: "
                f"{_shapes(args, kwargs)}; {counter.graphs} graph(s) compiled so far, recompile limit {limit}. "
                f"Likely causes: the recompile limit was hit (too many distinct input shapes / keyword arguments "
                f"/ grad modes: batch and sequence dims are already dynamic), a Dynamo error this frame recovered "
                f"from by running eagerly (TORCH_LOGS=graph_breaks,recompiles says which), or torch.compile is "
                f"disabled (TORCHDYNAMO_DISABLE, torch.compiler.set_stance('force_eager'))."
            )
        return base(model, *args, **kwargs)

    # A fresh code object -> a fresh Dynamo cache; a name of its own -> its own automatic-dynamic state, so the
    # shapes another model of this class was called with never add graphs (or guards) here.
    forward.__code__ = forward.__code__.replace(co_name=f"qpass_forward_{next(_FORWARD_IDS)}")
    functools.update_wrapper(forward, base)
    forward.__signature__ = signature  # HF inspects forward's parameters (generate)
    del forward.__wrapped__
    compiled = torch.compile(forward, backend=graphs.backend, fullgraph=fullgraph, dynamic=dynamic)
    # The limit applies while this model's frame is compiled, through a scoped config patch: torch.compile's own
    # `recompile_limit=` argument is newer than torch 2.11, and the global setting stays as the user left it.

    def run(*args, **kwargs):
        try:
            arguments = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:  # let the forward itself report the bad call
            arguments = kwargs
        if dynamic is not False:
            mark_dynamic_inputs(arguments)
        else:
            args, kwargs = _fresh_aliases(args, kwargs)
        with tracing_config(dynamic is not False, recompile_limit=limit), fx_config.patch(backed_size_oblivious=True):
            out = compiled(*args, **kwargs)
        counter.calls += 1
        return out

    functools.update_wrapper(run, base)
    run.__signature__ = signature
    del run.__wrapped__
    graphs.forward = run
    return graphs


def _shapes(args, kwargs) -> str:
    items = [(str(i), a) for i, a in enumerate(args)] + list(kwargs.items())
    return ", ".join(f"{k}={list(v.shape)}" for k, v in items if isinstance(v, torch.Tensor)) or "no tensors"


def export_graph(model: torch.nn.Module, input_ids: torch.Tensor, dynamic: bool = False):
    """(ExportedProgram, CapturedGraph) through torch.export (non-strict) — the capture path for export.

    The graph is pre-dispatch ATen (`aten.linear.default`, `aten.scaled_dot_product_attention.default` kept);
    parameter placeholders are named from the graph signature. Export aliases live parameters: clone before
    folding anything into them.
    """
    from torch.export import Dim, export

    shapes = {"input_ids": {0: Dim("batch"), 1: Dim("seq")}, "use_cache": None} if dynamic else None
    # torch 2.11 cannot prove some shape facts HF masks imply (min(16s, 32s) == 16s): runtime asserts, not errors
    with tracing_config(dynamic):
        ep = export(model, (), {"input_ids": input_ids, "use_cache": False}, strict=False, dynamic_shapes=shapes,
                    prefer_deferred_runtime_asserts_over_guards=True)
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
