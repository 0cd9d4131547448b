"""Graph analysis shared by every pass: linear sites, their producers and siblings, attention sites, and what
cannot be handled. Everything is derived from the graph's ops and the parameters' shapes — no per-architecture
name tables.
"""
from __future__ import annotations

import operator
from collections import defaultdict, deque
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .capture import (
    ADDMM_TARGETS,
    EMBEDDING_TARGETS,
    LINEAR_TARGETS,
    MATMUL_TARGETS,
    SDPA_TARGETS,
    CapturedGraph,
    node_value,
)

# Ops that only move, cast or re-view a tensor (the channel axis survives): walking back through them finds the
# real producer of a linear's input.
_TRANSPARENT_METHODS = {"to", "contiguous", "float", "half", "bfloat16", "type", "type_as", "view", "reshape", "clone", "transpose", "flatten"}
_TRANSPARENT_FUNCTIONS = {
    torch.reshape,
    torch.flatten,
    torch.transpose,
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten._to_copy.default,
    torch.ops.aten.to.dtype,
    torch.ops.aten.clone.default,
    torch.ops.aten.contiguous.default,
    torch.ops.aten.transpose.int,
    torch.ops.aten.alias.default,
}
_NORM_FUNCTIONS = {
    torch.nn.functional.layer_norm: 2,  # target -> index of the weight argument
    torch.ops.aten.layer_norm.default: 2,
    torch.nn.functional.rms_norm: 2,
    torch.ops.aten.rms_norm.default: 2,
}
_RSQRT = {torch.rsqrt, torch.ops.aten.rsqrt.default}
_MUL = {torch.mul, torch.ops.aten.mul.Tensor, operator.mul}
_ADD = {torch.add, torch.ops.aten.add.Tensor, operator.add}
_TOPK = {torch.topk, torch.ops.aten.topk.default}
_SOFTMAX = {torch.softmax, torch.nn.functional.softmax, torch.ops.aten._softmax.default, torch.ops.aten.softmax.int}


def op_name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return str(t)
    name = getattr(t, "__name__", None) or str(t)
    return name.replace("aten.", "").split(".default")[0]


def _keeps_last_dim(node: fx.Node) -> bool:
    """A tensor `x[idx]` that leaves the last (channel) dim whole, e.g. HF's `hidden[:, -k:, :]`."""
    idx = node.args[1] if len(node.args) > 1 else None
    if not isinstance(node_value(node.args[0]), torch.Tensor):
        return False
    idx = idx if isinstance(idx, tuple) else (idx,)
    if Ellipsis in idx:
        return idx[-1] is Ellipsis or idx[-1] == slice(None)
    return len(idx) < node_value(node.args[0]).dim() or idx[-1] == slice(None)


def is_transparent(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is operator.getitem:
        return _keeps_last_dim(node)
    if node.op == "call_function" and node.target is torch.ops.aten.slice.Tensor:  # export's x[:, a:b, :]
        x = node_value(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else 0
        return x is not None and dim % x.dim() != x.dim() - 1
    if node.op == "call_method":
        return node.target in _TRANSPARENT_METHODS
    return node.op == "call_function" and node.target in _TRANSPARENT_FUNCTIONS


def skip_transparent(node):
    """Follow the first tensor argument back through casts and views."""
    while isinstance(node, fx.Node) and is_transparent(node) and node.args and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


@dataclass
class Producer:
    """What computes a linear's input, seen through casts and views."""

    kind: str  # norm | linear | attention | elementwise | embedding | input | other
    op: str  # the producing op (e.g. "mul", "scaled_dot_product_attention", "layer_norm")
    site: str | None = None  # kind=linear: the producing linear site
    norm_weight: str | None = None  # kind=norm: the FQN of the norm's scale γ
    norm_form: str | None = None  # kind=norm: "gamma" (x·γ) or "one_plus_gamma" (x·(1+γ), Gemma)
    norm_bias: str | None = None  # kind=norm: the FQN of the norm's shift β (LayerNorm), if any


@dataclass
class LinearSite:
    name: str  # module path of the calling module (e.g. model.layers.0.self_attn.q_proj)
    weight: str  # FQN of the weight parameter (tied weights: the first name)
    bias: str | None
    in_features: int
    out_features: int
    transposed: bool  # weight stored [in, out] (GPT-2 Conv1D via addmm/matmul)
    op: str  # linear | addmm | matmul
    producer: Producer
    siblings: list[str] = field(default_factory=list)  # other sites reading the same input (q/k/v; gate/up)
    routes: bool = False  # a router: its output reaches a top-k (expert selection)
    node: fx.Node | None = field(default=None, repr=False, compare=False)
    input: fx.Node | None = field(default=None, repr=False, compare=False)


@dataclass
class ExpertSite:
    """A 3-D parameter read per expert by a grouped matmul `grouped_mm(x [S, in], W [E, in, out], offs)` — the
    rows x sorted by expert, offs[e] the end row of expert e (transformers' MoE experts)."""

    name: str  # the weight's FQN (one site per expert tensor: model.layers.0.mlp.experts.gate_up_proj)
    weight: str
    num_experts: int
    in_features: int
    out_features: int
    transposed: bool  # parameter stored [E, in, out] (read as is); False: [E, out, in] read through a transpose
    op: str
    node: fx.Node | None = field(default=None, repr=False, compare=False)
    input: fx.Node | None = field(default=None, repr=False, compare=False)
    offs: fx.Node | None = field(default=None, repr=False, compare=False)


@dataclass
class AttentionSite:
    name: str
    sources: dict[str, list[str]]  # q/k/v -> linear sites they come from
    is_causal: bool
    has_mask: bool
    num_heads: int | None
    head_dim: int | None
    node: fx.Node | None = field(default=None, repr=False, compare=False)


@dataclass
class Unsupported:
    name: str  # module path of the consuming op
    tensor: str  # parameter FQN
    op: str
    reason: str


@dataclass
class EmbeddingSite:
    """A lookup `embedding(W, ids)` of a 2-D parameter (the start of the residual stream)."""

    weight: str  # FQN of the table
    node: fx.Node | None = field(default=None, repr=False, compare=False)


@dataclass
class GraphAnalysis:
    linears: list[LinearSite]
    attention: list[AttentionSite]
    unsupported: list[Unsupported]
    experts: list[ExpertSite] = field(default_factory=list)
    embeddings: list[EmbeddingSite] = field(default_factory=list)

    def by_name(self) -> dict[str, LinearSite]:
        return {s.name: s for s in self.linears}


def _param_2d(cap: CapturedGraph, node) -> str | None:
    """FQN of `node` if it is a 2-D parameter placeholder."""
    if isinstance(node, fx.Node) and node.op == "placeholder" and node in cap.fqn_of:
        if cap.tensor_of[node].dim() == 2:
            return cap.fqn_of[node]
    return None


def _match_linear(cap: CapturedGraph, node: fx.Node):
    """(input, weight node, bias FQN, transposed, op) if `node` is a linear on a parameter weight."""
    if node.op != "call_function":
        return None
    args = list(node.args)
    if node.target in LINEAR_TARGETS:
        weight = args[1] if len(args) > 1 else node.kwargs.get("weight")
        bias = args[2] if len(args) > 2 else node.kwargs.get("bias")
        if _param_2d(cap, weight):
            return args[0], weight, cap.fqn_of.get(bias), False, "linear"
    elif node.target in ADDMM_TARGETS and len(args) >= 3:
        if _param_2d(cap, args[2]):
            return args[1], args[2], cap.fqn_of.get(args[0]), True, "addmm"
    elif node.target in MATMUL_TARGETS and len(args) >= 2:
        if _param_2d(cap, args[1]):
            return args[0], args[1], None, True, "matmul"
    return None


def _has_ancestor(node: fx.Node, targets: set, depth: int) -> bool:
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            if not isinstance(n, fx.Node):
                continue
            if (n.op == "call_function" and n.target in targets) or (n.op == "call_method" and n.target == "rsqrt"):
                return True
            nxt.extend(a for a in n.all_input_nodes)
        frontier = nxt
    return False


def _norm_scale(cap: CapturedGraph, node) -> tuple[str, str] | None:
    """(γ FQN, form) if `node` is a 1-D parameter, or 1 + a 1-D parameter (Gemma's RMSNorm)."""
    node = skip_transparent(node)
    if not isinstance(node, fx.Node):
        return None
    if node.op == "placeholder" and node in cap.fqn_of and cap.tensor_of[node].dim() == 1:
        return cap.fqn_of[node], "gamma"
    if node.op == "call_function" and node.target in _ADD:
        a, b = (list(node.args) + [None, None])[:2]
        for const, p in ((a, b), (b, a)):
            if isinstance(const, (int, float)) and const == 1:
                inner = _norm_scale(cap, p)
                if inner:
                    return inner[0], "one_plus_gamma"
    return None


def classify_producer(
    cap: CapturedGraph, x, site_of_output: dict[fx.Node, str], attention_outputs: set[fx.Node]
) -> Producer:
    node = skip_transparent(x)
    if not isinstance(node, fx.Node):
        return Producer("other", type(node).__name__)
    if node.op == "placeholder":
        return Producer("input", "placeholder")
    if node in site_of_output:
        return Producer("linear", "linear", site=site_of_output[node])
    name = op_name(node)
    if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
        idx = _NORM_FUNCTIONS[node.target]
        w = node.args[idx] if len(node.args) > idx else node.kwargs.get("weight")
        b = node.args[idx + 1] if len(node.args) > idx + 1 else node.kwargs.get("bias")
        return Producer("norm", name, norm_weight=cap.fqn_of.get(w), norm_form="gamma", norm_bias=cap.fqn_of.get(b))
    if node.op == "call_function" and node.target in _MUL and len(node.args) == 2:
        for scale_arg, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            scale = _norm_scale(cap, scale_arg)
            if scale and isinstance(other, fx.Node) and _has_ancestor(other, _RSQRT, depth=4):
                return Producer("norm", "rms_norm", norm_weight=scale[0], norm_form=scale[1])
    if node in attention_outputs:
        return Producer("attention", name)
    if node.op == "call_function" and node.target in EMBEDDING_TARGETS:
        return Producer("embedding", name)
    return Producer("elementwise" if node.op in ("call_function", "call_method") else "other", name)


def _linear_sources(node: fx.Node, site_of_output: dict[fx.Node, str], max_nodes: int = 64) -> list[str]:
    """Linear sites reachable backwards from `node` without passing through another linear."""
    found, seen, queue = [], set(), deque([node])
    while queue and len(seen) < max_nodes:
        n = queue.popleft()
        if n in seen or not isinstance(n, fx.Node):
            continue
        seen.add(n)
        if n in site_of_output:
            found.append(site_of_output[n])
            continue
        queue.extend(n.all_input_nodes)
    return sorted(set(found))


def _is_softmax(node) -> bool:
    return isinstance(node, fx.Node) and (
        (node.op == "call_function" and node.target in _SOFTMAX) or (node.op == "call_method" and node.target == "softmax")
    )


def _is_activation_matmul(node) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in MATMUL_TARGETS


def _attention_site(cap: CapturedGraph, node: fx.Node, site_of_output: dict[fx.Node, str]) -> AttentionSite | None:
    """An SDPA call, or eager attention: matmul(softmax(matmul(q, kᵀ) ...), v)."""
    if node.op == "call_function" and node.target in SDPA_TARGETS:
        q, k, v = node.args[:3]
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        causal = bool(node.args[5] if len(node.args) > 5 else node.kwargs.get("is_causal", False))
        has_mask = mask is not None
    elif _is_activation_matmul(node) and len(node.args) >= 2:
        probs = node.args[0]
        while isinstance(probs, fx.Node) and not _is_softmax(probs) and probs.all_input_nodes and (
            is_transparent(probs) or op_name(probs) in ("dropout", "to")
        ):
            probs = probs.args[0]
        if not _is_softmax(probs):
            return None
        scores = probs.args[0]
        while isinstance(scores, fx.Node) and not _is_activation_matmul(scores) and scores.all_input_nodes:
            scores = scores.all_input_nodes[0]  # back through scaling, soft-capping and the mask add
        if not _is_activation_matmul(scores):
            return None
        q, k, v = scores.args[0], scores.args[1], node.args[1]
        causal, has_mask = False, True
    else:
        return None
    qv = node_value(q)
    return AttentionSite(
        name=cap.module_path(node),
        sources={name: _linear_sources(t, site_of_output) for name, t in (("q", q), ("k", k), ("v", v))},
        is_causal=causal,
        has_mask=has_mask,
        num_heads=int(qv.shape[1]) if qv is not None and qv.dim() == 4 else None,
        head_dim=int(qv.shape[-1]) if qv is not None else None,
        node=node,
    )


def grouped_mm_targets() -> set:
    """The grouped matmuls `(x [S, K], W [E, K, N], offs)` as Dynamo and torch.export record them: torch's own
    and transformers' fallback (registered when transformers' MoE integration is imported)."""
    targets = {getattr(torch, "_grouped_mm", None), getattr(torch.nn.functional, "grouped_mm", None)}
    if hasattr(torch.ops.aten, "_grouped_mm"):
        targets.add(torch.ops.aten._grouped_mm.default)
    if hasattr(torch.ops.transformers, "grouped_mm_fallback"):
        op = torch.ops.transformers.grouped_mm_fallback
        targets |= {op, op.default}
    return targets - {None}


def _is_last_two_transpose(node) -> bool:
    if not isinstance(node, fx.Node) or len(node.args) < 3:
        return False
    is_t = (node.op == "call_method" and node.target == "transpose") or (
        node.op == "call_function" and node.target in (torch.transpose, torch.ops.aten.transpose.int))
    return is_t and {node.args[1] % 3 if isinstance(node.args[1], int) else None,
                     node.args[2] % 3 if isinstance(node.args[2], int) else None} == {1, 2}


def _match_experts(cap: CapturedGraph, node: fx.Node, targets: set):
    """(input, parameter node, weight-argument node, offs, transposed) for a grouped matmul on a 3-D parameter."""
    if node.op != "call_function" or node.target not in targets or len(node.args) < 2:
        return None
    x, w = node.args[0], node.args[1]
    offs = node.args[2] if len(node.args) > 2 else node.kwargs.get("offs")
    param, transposed = (w.args[0], False) if _is_last_two_transpose(w) else (w, True)
    if isinstance(param, fx.Node) and param.op == "placeholder" and param in cap.fqn_of \
            and cap.tensor_of[param].dim() == 3 and offs is not None:
        return x, param, w, offs, transposed
    return None


def _reaches_topk(node: fx.Node, depth: int = 4) -> bool:
    """The output flows into a top-k within `depth` ops (through softmax, casts): a router's logits."""
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for u in n.users:
                if (u.op == "call_function" and u.target in _TOPK) or (u.op == "call_method" and u.target == "topk"):
                    return True
                nxt.append(u)
        frontier = nxt
    return False


def analyze(cap: CapturedGraph) -> GraphAnalysis:
    graph = cap.graph
    matches = {}
    for node in graph.nodes:
        m = _match_linear(cap, node)
        if m:
            matches[node] = m
    site_of_output = {}
    names_used: dict[str, int] = defaultdict(int)
    for node, (_, w, _, _, _) in matches.items():
        base = cap.module_path(node) or cap.fqn_of[w].rsplit(".", 1)[0]
        names_used[base] += 1
        # A module that calls several linears (rare) gets numbered sites.
        site_of_output[node] = base if names_used[base] == 1 else f"{base}#{names_used[base] - 1}"

    attention = [a for node in graph.nodes if (a := _attention_site(cap, node, site_of_output))]
    attention_outputs = {a.node for a in attention}

    linears = []
    by_input: dict[fx.Node, list[str]] = defaultdict(list)
    for node, (x, w, b, transposed, op) in matches.items():
        shape = cap.tensor_of[w].shape
        out_f, in_f = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        site = LinearSite(
            name=site_of_output[node],
            weight=cap.fqn_of[w],
            bias=b,
            in_features=int(in_f),
            out_features=int(out_f),
            transposed=transposed,
            op=op,
            producer=classify_producer(cap, x, site_of_output, attention_outputs),
            node=node,
            input=x,
        )
        site.routes = _reaches_topk(node)
        linears.append(site)
        by_input[skip_transparent(x)].append(site.name)
    for site in linears:
        group = by_input[skip_transparent(site.input)]
        site.siblings = [n for n in group if n != site.name]

    experts, handled_experts = [], set()
    targets = grouped_mm_targets()
    for node in graph.nodes:
        m = _match_experts(cap, node, targets)
        if m is None:
            continue
        x, param, warg, offs, transposed = m
        E, a, b = cap.tensor_of[param].shape
        in_f, out_f = (a, b) if transposed else (b, a)
        experts.append(ExpertSite(cap.fqn_of[param], cap.fqn_of[param], int(E), int(in_f), int(out_f), transposed,
                                  op_name(node), node=node, input=x, offs=offs))
        handled_experts.add((warg if not transposed else node, param))

    # Any other use of a 2-D+ parameter is something qpass does not handle: report it, never skip it silently.
    handled = {(node, w) for node, (_, w, _, _, _) in matches.items()} | handled_experts
    unsupported, embeddings = [], []
    for ph, fqn in cap.fqn_of.items():
        t = cap.tensor_of[ph]
        if not isinstance(t, torch.nn.Parameter) or t.dim() < 2:
            continue
        for user in ph.users:
            if (user, ph) in handled:
                continue
            if user.op == "call_function" and user.target in EMBEDDING_TARGETS:
                if ph in user.args[:2]:
                    embeddings.append(EmbeddingSite(fqn, user))
                continue
            unsupported.append(Unsupported(cap.module_path(user) or fqn, fqn, op_name(user), "unsupported op"))
    return GraphAnalysis(linears, attention, unsupported, experts, embeddings)
