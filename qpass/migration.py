"""Exact per-channel factor migration, derived from the graph analysis (no per-architecture name tables).

A group of linears reading one tensor X (q/k/v; gate/up; o_proj; down_proj) can take `X ← X / f` (f > 0 per input
channel) with `W ← W · diag(f)` in every consumer, provided the producer of X can absorb 1/f exactly:
- a norm's scale γ (x·γ, x·(1+γ) for Gemma, and LayerNorm's shift β): γ ← γ / f;
- the output rows of a linear that reaches X only through ops that are linear per channel: attention's P·V
  (rows of W_v; under GQA the factor must be equal across the query heads that share a KV head) and the product
  act(g) ⊙ u of a gated MLP (rows of W_up).
Anything else (GELU between two linears, fused QKV projections, ...) has no exact migration: the caller keeps an
explicit scaling node there. SmoothQuant and QSM both run on this one mechanism.
A gated product act(g) ⊙ u also takes any reordering of its channels exactly, as a reordering of g's and u's rows
(`Migration.reorder`, `reorder_channels`): QSM's sorted channel order then needs no run-time gather there.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from .analysis import _MUL, GraphAnalysis, LinearSite, is_transparent, op_name, skip_transparent
from .capture import node_value

# Ops between v_proj and attention that only reshape or broadcast (HF repeat_kv: x[:, :, None].expand().reshape()).
_BROADCAST_OPS = {"expand", "unsqueeze", "repeat_interleave", "permute", "getitem", "expand_as"}
# One-input activations applied element by element: they commute with any reordering of the channels.
_ELEMENTWISE_ACTIVATIONS = {"silu", "gelu", "relu", "sigmoid", "tanh", "mish", "softplus", "elu", "leaky_relu",
                            "hardswish", "hardsigmoid", "relu6", "selu", "celu", "gelu_"}


@dataclass
class Migration:
    sites: list[str]  # the consumers of X (all linears that read it)
    channels: int
    kind: str  # norm | rows | none
    reason: str  # kind none: why no exact migration exists; else what absorbs 1/f
    norm_weight: str | None = None
    norm_form: str | None = None
    norm_bias: str | None = None
    producer: LinearSite | None = None  # kind rows: the linear whose output rows absorb 1/f
    rows: torch.Tensor | None = None  # kind rows: [channels] producer output row behind each channel of X
    # linears whose output rows, reordered together, reorder X's channels in any order (a gated product's g and
    # u): a channel permutation of X then lives in the weights (`reorder_channels`); None: no such producer
    reorder: list[LinearSite] | None = None

    def tie(self, f: torch.Tensor) -> torch.Tensor:
        """`f` made feasible: channels fed by one producer row (GQA) share a factor (their max)."""
        if self.rows is None:
            return f
        n = self.producer.out_features
        rows = self.rows.to(f.device)
        t = torch.zeros(n, device=f.device).scatter_reduce(0, rows, f.float(), "amax", include_self=False)
        return t[rows]

    @property
    def exact(self) -> bool:
        return self.kind != "none"


def _users_ok(node: fx.Node, allowed: set[fx.Node]) -> bool:
    """Every use of `node` (through casts and views) is one of `allowed`."""
    for user in node.users:
        if user in allowed:
            continue
        if is_transparent(user) and user.args and user.args[0] is node and _users_ok(user, allowed):
            continue
        return False
    return True


def _chain_to(start, target: fx.Node) -> bool:
    """`start` is `target` seen through single-use reshapes and broadcasts only."""
    node = start
    for _ in range(32):
        if node is target:
            return True
        if not isinstance(node, fx.Node) or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        if not (is_transparent(node) or op_name(node) in _BROADCAST_OPS):
            return False
        node = node.args[0]
        if len(node.users) != 1:
            return False
    return False


def _norm_migration(sites, key, producer) -> Migration:
    if producer.norm_weight is None:
        return Migration([s.name for s in sites], sites[0].in_features, "none", "norm without a scale parameter")
    if not _users_ok(key, {s.node for s in sites}):
        return Migration([s.name for s in sites], sites[0].in_features, "none", "the norm output has non-linear users")
    return Migration(
        [s.name for s in sites], sites[0].in_features, "norm", f"norm scale {producer.norm_weight}",
        norm_weight=producer.norm_weight, norm_form=producer.norm_form, norm_bias=producer.norm_bias,
    )


def _v_migration(sites, key, analysis: GraphAnalysis) -> Migration:
    names, c = [s.name for s in sites], sites[0].in_features
    att = next((a for a in analysis.attention if a.node is key), None)
    if att is None or att.head_dim is None or len(att.sources.get("v", [])) != 1:
        return Migration(names, c, "none", "attention whose V comes from no single linear")
    v = analysis.by_name()[att.sources["v"][0]]
    hd = att.head_dim
    if c % hd or v.out_features % hd or (c // hd) % (v.out_features // hd):
        return Migration(names, c, "none", f"V from {v.name} is not [kv_heads × head_dim] (fused projection?)")
    v_arg = key.args[2] if op_name(key).endswith("scaled_dot_product_attention") else key.args[1]
    if v_arg is None or not _chain_to(v_arg, v.node):
        return Migration(names, c, "none", f"{v.name} reaches attention through non-reshape ops")
    heads, group = c // hd, (c // hd) // (v.out_features // hd)
    ch = torch.arange(c)
    rows = (ch // hd // group) * hd + ch % hd  # query head h reads KV head h // group (repeat_kv order)
    return Migration(names, c, "rows", f"rows of {v.name} (P·V; GQA {heads}/{heads // group})", producer=v, rows=rows)


def _gated_migration(sites, key, analysis: GraphAnalysis) -> Migration:
    names, c = [s.name for s in sites], sites[0].in_features
    if not (key.op == "call_function" and key.target in _MUL and len(key.args) == 2):
        return Migration(names, c, "none", f"producer {op_name(key)} is not linear per channel")
    out_of = {s.node: s for s in analysis.linears}
    for arg in key.args:
        u = out_of.get(skip_transparent(arg)) if isinstance(arg, fx.Node) else None
        if u is not None and u.out_features == c and _chain_to(arg, u.node) and len(u.node.users) == 1:
            reorder = [_elementwise_source(a, c, out_of) for a in key.args]
            return Migration(names, c, "rows", f"rows of {u.name} (act(g) ⊙ u)", producer=u, rows=torch.arange(c),
                             reorder=None if None in reorder or reorder[0] is reorder[1] else reorder)
    return Migration(names, c, "none", "elementwise product with no single-use linear operand")


def _elementwise_source(node, c: int, out_of: dict) -> LinearSite | None:
    """The linear whose output reaches `node` through one-input element-by-element ops (casts, activations) only,
    each the sole user of the one before and keeping the c channels last; None if there is none."""
    for _ in range(16):
        value = node_value(node) if isinstance(node, fx.Node) else None
        if value is None or value.dim() == 0 or value.shape[-1] != c:
            return None
        if node in out_of:
            return out_of[node] if out_of[node].out_features == c and len(node.users) == 1 else None
        per_element = op_name(node).split(".")[-1] in _ELEMENTWISE_ACTIVATIONS
        cast = is_transparent(node) and "transpose" not in op_name(node)
        if not (per_element or cast) or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        if len(node.args[0].users) != 1:
            return None
        node = node.args[0]
    return None


def find_migrations(analysis: GraphAnalysis, selected: dict[str, LinearSite]) -> list[Migration]:
    """One Migration per tensor read by selected linears (siblings grouped). Groups with an unselected consumer
    (e.g. the final norm feeding lm_head) are left out."""
    groups: dict[fx.Node, list[LinearSite]] = {}
    for site in analysis.linears:
        groups.setdefault(skip_transparent(site.input), []).append(site)
    out = []
    for key, sites in groups.items():
        if not all(s.name in selected for s in sites):
            continue
        p = sites[0].producer
        if p.kind == "norm":
            out.append(_norm_migration(sites, key, p))
        elif p.kind == "attention":
            out.append(_v_migration(sites, key, analysis))
        elif p.kind == "elementwise":
            out.append(_gated_migration(sites, key, analysis))
        else:
            out.append(Migration([s.name for s in sites], sites[0].in_features, "none", f"producer is {p.kind} ({p.op})"))
    return out


@torch.no_grad()
def scale_columns(model: torch.nn.Module, site: LinearSite, f: torch.Tensor) -> None:
    """W ← W · diag(f) (the consumer side; always exact)."""
    w = model.get_parameter(site.weight)
    f = f.to(w.device, w.dtype)
    w.mul_(f[:, None] if site.transposed else f[None, :])


@torch.no_grad()
def apply(model: torch.nn.Module, analysis: GraphAnalysis, m: Migration, f: torch.Tensor) -> None:
    """X ← X / f at the producer and W ← W · diag(f) in every consumer. `f` must satisfy `m.tie`."""
    if not m.exact:
        raise ValueError(f"no exact migration for {m.sites}: {m.reason}")
    f = f.float()
    sites = analysis.by_name()
    if m.kind == "norm":
        g = model.get_parameter(m.norm_weight)
        f = f.to(g.device)
        if m.norm_form == "one_plus_gamma":
            g.copy_(((1 + g.float()) / f - 1).to(g.dtype))
        else:
            g.copy_((g.float() / f).to(g.dtype))
        if m.norm_bias:
            b = model.get_parameter(m.norm_bias)
            b.copy_((b.float() / f).to(b.dtype))
    else:
        n = m.producer.out_features
        rows = m.rows.to(f.device)
        fr = torch.ones(n, device=f.device).scatter(0, rows, f)
        if not torch.allclose(fr[rows], f):
            raise ValueError(f"factor for {m.sites} is not equal across channels sharing a row of {m.producer.name}")
        w = model.get_parameter(m.producer.weight)
        fr = fr.to(w.device, w.dtype)
        w.div_(fr[None, :] if m.producer.transposed else fr[:, None])
        if m.producer.bias:
            b = model.get_parameter(m.producer.bias)
            b.div_(fr)
    for name in m.sites:
        scale_columns(model, sites[name], f)


@torch.no_grad()
def reorder_channels(model: torch.nn.Module, analysis: GraphAnalysis, m: Migration, order: torch.Tensor) -> None:
    """X ← X[..., order] in the weights: the rows of every `m.reorder` linear and the columns of every consumer
    (exact: the model computes the same function; order is a permutation of X's channels)."""
    if not m.reorder:
        raise ValueError(f"no producer of the input of {m.sites} reorders its channels")
    sites = analysis.by_name()
    for site, out_side in [(p, True) for p in m.reorder] + [(sites[n], False) for n in m.sites]:
        w = model.get_parameter(site.weight)
        dim = (0 if out_side else 1) ^ int(site.transposed)  # [out, in], or [in, out] when transposed
        w.copy_(w.index_select(dim, order.to(w.device)))
        if out_side and site.bias:
            b = model.get_parameter(site.bias)
            b.copy_(b[order.to(b.device)])


@torch.no_grad()
def reorder_observer(obs, order: torch.Tensor) -> None:
    """Statistics of X[..., order] from those of X."""
    obs.absmax, obs.min, obs.max, obs._pct_sum = (t[order] for t in (obs.absmax, obs.min, obs.max, obs._pct_sum))
    if obs.samples is not None:
        obs.samples = obs.samples[:, order]
    for name in ("hessian", "sink_hessian"):
        h = getattr(obs, name, None)
        if h is not None:
            setattr(obs, name, h[order][:, order])


@torch.no_grad()
def rescale_observer(obs, f: torch.Tensor) -> None:
    """Statistics of X / f from those of X (so one calibration serves every later migration)."""
    f = f.float()
    obs.absmax = obs.absmax / f
    obs.min, obs.max = obs.min / f, obs.max / f
    obs._pct_sum = obs._pct_sum / f
    if obs.samples is not None:
        obs.samples = obs.samples / f
    if obs.hessian is not None:
        d = (1 / f).double()
        obs.hessian = obs.hessian * d[:, None] * d[None, :]
    if getattr(obs, "sink_hessian", None) is not None:
        obs.sink_hessian = obs.sink_hessian * d[:, None] * d[None, :]


def output_placement(site: LinearSite, analysis: GraphAnalysis) -> str:
    """Where a per-output-channel factor (the int GEMM's δ) of `site` can go exactly."""
    for a in analysis.attention:
        for role in ("q", "k"):
            if site.name in a.sources.get(role, []):
                return (f"GEMM epilogue: {role} feeds RoPE/q_norm/k_norm, which a per-channel factor passes only if "
                        "equal within rotary pairs (i, i+d/2) and, before a per-head norm, within each head")
    return "GEMM epilogue (per output channel)"


__all__ = ["Migration", "find_migrations", "apply", "scale_columns", "rescale_observer", "reorder_channels",
           "reorder_observer", "output_placement", "operator"]
