"""Where a rotation is legal, read from the captured graph, and the orthogonal matrices (QuaRot family).

The residual stream is followed forward from the embedding lookups: through casts and views, and through each
`add` whose other operand is a linear's output (that linear *writes* the stream: o_proj, down_proj, ...). Any
other op reading the stream must belong to a norm whose output feeds linears (those linears *read* the stream).
A rotation x ← x·Q of the stream is then exact when every norm is an RMSNorm (‖x·Q‖ = ‖x‖) whose scale can be
folded into its readers, every writer's rows can absorb Qᵀ, and nothing else sees the stream. Everything that
breaks this is a refusal with the reason: LayerNorm (mean subtraction does not commute with Q; the centering
trick is not implemented), norm shifts, a residual add of something that is not a linear output (Gemma's
post-norms), a graph break, grouped expert weights, a stream that leaves the graph. Several embedding tables
(token + learned positions) are all rotated: their sum is the stream.

Matrices: `transform(n)` = kron(mix, H_p / √p) with n = m·p, p a power of two, H_p Sylvester's Hadamard and
`mix` (None when n is a power of two) a Paley Hadamard of order m (e.g. 36 for 576, 12 for 1536; `paley.py`),
or, where no such order divides n, a seeded random orthogonal matrix of n's odd part — the transform
qpass::hadamard applies at run time. The residual rotation is diag(±1) · transform(d), random signs seeded.
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .analysis import _ADD, _MUL, GraphAnalysis, LinearSite, is_transparent, op_name, skip_transparent
from .capture import node_value
from .kernels.hadamard.reference import sylvester
from .migration import find_migrations
from .paley import hadamard_factor


def split_pow2(n: int) -> tuple[int, int]:
    """(m, p): n = m·p, p the largest power of two dividing n."""
    p = n & -n
    return n // p, p


def random_orthogonal(m: int, seed: int) -> torch.Tensor:
    """A seeded m × m orthogonal matrix (QR of a Gaussian, signs fixed so it is unique), float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).contiguous()


def mix_matrix(n: int, seed: int) -> torch.Tensor | None:
    """The small orthogonal factor of transform(n): a Paley Hadamard where one divides n, else a random
    orthogonal matrix of n's odd part; None when n is a power of two."""
    m, _ = split_pow2(n)
    if m == 1:
        return None
    h = hadamard_factor(n)
    return h if h is not None else random_orthogonal(m, seed)


def transform(n: int, seed: int) -> torch.Tensor:
    """kron(mix, H_p / √p) as an n × n float64 matrix (x ↦ x @ T is qpass::hadamard(x, mix))."""
    mix = mix_matrix(n, seed)
    p = n if mix is None else n // mix.shape[0]
    h = sylvester(p, torch.float64) / p ** 0.5
    return h if mix is None else torch.kron(mix, h)


def residual_rotation(d: int, seed: int) -> torch.Tensor:
    """Q = diag(random ±1) · transform(d): QuaRot's randomized Hadamard of the residual stream, float64."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (d,), generator=g).double() * 2 - 1
    return signs[:, None] * transform(d, seed + 1)


@dataclass
class NormReaders:
    """Linears reading the stream through one norm: fold the norm's scale into them, then rotate their inputs."""

    sites: list[str]
    norm_weight: str | None
    norm_form: str | None  # gamma (x·γ) | one_plus_gamma (x·(1+γ))


@dataclass
class HeadPair:
    """V and the linear reading attention's output: per-head transform of V's output rows and O's columns."""

    v: str
    o: str
    head_dim: int
    rows: torch.Tensor  # O's input channel -> V's output row (GQA)


@dataclass
class RotationLayout:
    hidden: int = 0
    embeddings: list[str] = field(default_factory=list)
    readers: list[NormReaders] = field(default_factory=list)
    direct_readers: list[str] = field(default_factory=list)  # read the stream with no norm in between
    writers: list[str] = field(default_factory=list)
    heads: list[HeadPair] = field(default_factory=list)
    online: list[str] = field(default_factory=list)  # writers whose input gets qpass::hadamard at run time
    attention_out: list[str] = field(default_factory=list)  # writers reading attention (o_proj): online if asked
    notes: list[str] = field(default_factory=list)
    refused: str | None = None  # why the stream cannot be rotated (nothing is changed then)


def _is_add(n: fx.Node) -> bool:
    return n.op == "call_function" and n.target in _ADD or (n.op == "call_method" and n.target == "add")


def _is_scalar_mul(n: fx.Node, x: fx.Node) -> bool:
    if not (n.op == "call_function" and n.target in _MUL and len(n.args) == 2):
        return False
    other = n.args[1] if n.args[0] is x else n.args[0]
    if isinstance(other, fx.Node):  # a one-element tensor (Gemma's √d embedding scale) commutes too
        v = node_value(other)
        return isinstance(v, torch.Tensor) and v.numel() == 1
    return isinstance(other, (int, float))


def _norm_region(node: fx.Node, stream: set[fx.Node], limit: int = 24) -> set[fx.Node] | None:
    """The ops of a norm: the nodes between `node` (its output) and the stream, or None unless that region is
    small and closed (its only other inputs are parameters and constants) and touches the stream."""
    seen, todo, touches = set(), [node], False
    while todo:
        n = todo.pop()
        if n in stream:
            touches = True
            continue
        if n in seen:
            continue
        if n.op in ("placeholder", "get_attr"):  # the norm's scale, constants
            continue
        seen.add(n)
        if len(seen) > limit:
            return None
        todo.extend(n.all_input_nodes)
    return seen if touches else None


def find_layout(analysis: GraphAnalysis) -> RotationLayout:
    """The rotation layout of the analysed graph, or a layout whose `refused` says why there is none."""
    out = RotationLayout()
    if analysis.experts:
        out.refused = "grouped expert weights (MoE) read the stream: rotating them is not implemented"
        return out
    if not analysis.embeddings:
        out.refused = "no embedding lookup in the graph: the stream's start is unknown"
        return out
    graphs = {s.node.graph for s in analysis.linears} | {e.node.graph for e in analysis.embeddings}
    if len(graphs) != 1:
        out.refused = f"the model runs as {len(graphs)} graphs (graph breaks): the stream must be in one graph"
        return out
    out.embeddings = sorted({e.weight for e in analysis.embeddings})  # token and position tables: all rotate
    out_of = {s.node: s for s in analysis.linears}

    # Follow the stream forward; record which linears write it and which ops read it.
    todo = [e.node for e in analysis.embeddings]
    stream: set[fx.Node] = set(todo)  # every lookup is on the stream from the start (token + position tables)
    writers, uses, visited = set(), [], set()
    while todo:
        n = todo.pop()
        if n in visited:
            continue
        visited.add(n)
        stream.add(n)
        for u in n.users:
            if is_transparent(u) and u.args and u.args[0] is n or _is_scalar_mul(u, n):
                todo.append(u)
            elif _is_add(u) and len(u.args) == 2 and all(isinstance(a, fx.Node) for a in u.args):
                other = u.args[1] if u.args[0] is n else u.args[0]
                todo.append(u)
                if other in stream:
                    continue
                w = out_of.get(_through_dropout(other))
                if w is None or not _chain_ok(other, w.node):
                    out.refused = (f"the stream adds {op_name(_through_dropout(other))} at {u.name}, not a linear's "
                                   "output: it would stay unrotated (e.g. a post-norm)")
                    return out
                writers.add(w.name)
            else:
                uses.append((n, u))
    writers_pending = [w for w in writers if w in {x.name for x in analysis.linears}]

    # Who reads the stream: linears directly, or norms feeding linears.
    groups: dict[fx.Node, list[LinearSite]] = {}
    for s in analysis.linears:
        groups.setdefault(skip_transparent(s.input), []).append(s)
    norm_nodes: set[fx.Node] = set()
    for key, sites in groups.items():
        names = [s.name for s in sites]
        if key in stream:
            out.direct_readers += names
            continue
        p = sites[0].producer
        if p.kind != "norm":
            continue
        region = _norm_region(key, stream)
        if region is None:
            continue  # a norm of something else (q_norm, a post-norm): not a reader of the stream
        if p.op == "layer_norm" or p.norm_bias:
            out.refused = (f"{names[0]} reads the stream through {p.op}"
                           f"{' with a shift' if p.norm_bias else ''}: mean subtraction and shifts do not commute "
                           "with a rotation (the centering trick is not implemented)")
            return out
        if any(u.op == "output" for u in key.users):
            out.refused = f"the output of the norm before {names[0]} leaves the graph"
            return out
        norm_nodes |= region
        out.readers.append(NormReaders(names, p.norm_weight, p.norm_form))
    direct = set(out.direct_readers)
    for n, u in uses:
        if u.op == "output":
            out.refused = f"the stream leaves the graph at {n.name} (hidden states would come out rotated)"
            return out
        if u in out_of and out_of[u].name in direct or u in norm_nodes:
            continue
        out.refused = f"the stream is read by {op_name(u)} ({u.name}), which does not commute with a rotation"
        return out
    if not (out.readers or out.direct_readers) or not writers_pending:
        out.refused = f"no linear {'writes' if out.readers or out.direct_readers else 'reads'} the stream"
        return out
    sizes = {analysis.by_name()[n].in_features for r in out.readers for n in r.sites} | \
            {analysis.by_name()[n].out_features for n in writers_pending}
    if len(sizes) != 1:
        out.refused = f"readers and writers of the stream disagree on its width ({sorted(sizes)})"
        return out
    out.hidden = sizes.pop()
    out.writers = sorted(writers_pending)
    _plan_heads_and_online(analysis, out)
    return out


def _is_eval_dropout(n: fx.Node) -> bool:
    training = n.kwargs.get("training", n.args[2] if len(n.args) > 2 else True)
    return op_name(n) == "dropout" and training is False


def _chain_ok(start: fx.Node, target: fx.Node) -> bool:
    """`start` is `target` seen through casts, views and inference-mode dropout."""
    node = start
    while node is not target:
        if not (isinstance(node, fx.Node) and (is_transparent(node) or _is_eval_dropout(node)) and node.args):
            return False
        node = node.args[0]
    return True


def _through_dropout(n):
    while isinstance(n, fx.Node) and (is_transparent(n) or _is_eval_dropout(n)) and n.args:
        n = n.args[0]
    return n


def _plan_heads_and_online(analysis: GraphAnalysis, out: RotationLayout) -> None:
    """Per-head V/O transforms where attention's V comes from one linear by reshapes only (the migration
    machinery's check); an online Hadamard on every other writer's input (down_proj)."""
    by_name = analysis.by_name()
    everything = {s.name: s for s in analysis.linears}
    migrations = {tuple(m.sites): m for m in find_migrations(analysis, everything)}
    for w in out.writers:
        site = by_name[w]
        if site.producer.kind == "attention":
            out.attention_out.append(w)
            m = next((m for k, m in migrations.items() if w in k), None)
            att = next((a for a in analysis.attention if a.node is skip_transparent(site.input)), None)
            if m is None or m.kind != "rows" or att is None or len(m.sites) != 1:
                out.notes.append(f"{w}: no per-head V/O transform ({m.reason if m else 'attention not found'})")
                continue
            out.heads.append(HeadPair(m.producer.name, w, att.head_dim, m.rows))
        else:
            out.online.append(w)


@contextlib.contextmanager
def online_rotation_hooks(model: torch.nn.Module, rotations: dict):
    """Eager counterpart of `insert_online_rotations`: while open, each module in `rotations` ({site:
    OnlineRotation}) reads `qpass::hadamard(x, mix)` instead of its input x (a forward pre-hook, registered first, so
    hooks added later — observers, a fake-quant forward — see the rotated input)."""
    from .kernels.hadamard.ops import hadamard

    hooks = []
    for name, rot in rotations.items():
        mix = rot.mix
        hooks.append(model.get_submodule(name).register_forward_pre_hook(
            lambda mod, args, mix=mix: (hadamard(args[0], None if mix is None else mix.to(args[0].device)),
                                        *args[1:])))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def insert_online_rotations(cap, rotations: dict) -> int:
    """Graph transform: each site in `rotations` ({site: OnlineRotation}) reads `qpass::hadamard(x, mix)`
    instead of x (calibration, so statistics see what the quantizer will; and the Q/DQ rewrite). Returns the count."""
    import re

    from .analysis import analyze
    from .kernels.hadamard import ops  # noqa: F401  (registers qpass::hadamard)

    gm, graph, done = cap.gm, cap.graph, 0
    for site in analyze(cap).linears:
        rot = rotations.get(site.name)
        if rot is None:
            continue
        mix = None
        if rot.mix is not None:
            name = re.sub(r"[^0-9a-zA-Z_]", "_", f"qpass_{site.name}_hadamard_mix")
            gm.register_buffer(name, rot.mix, persistent=False)
            with graph.inserting_before(site.node):
                mix = graph.get_attr(name)
        with graph.inserting_before(site.node):
            h = graph.call_function(torch.ops.qpass.hadamard.default, (site.input, mix))
        site.node.replace_input_with(site.input, h)
        done += 1
    return done


__all__ = ["insert_online_rotations", "RotationLayout", "find_layout", "transform", "residual_rotation", "mix_matrix", "split_pow2",
           "operator"]
