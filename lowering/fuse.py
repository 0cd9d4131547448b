"""Sibling fusion: linears that read the same input and take the same rule become one kernel call.

q/k/v (and gate/up) projections read one normalized hidden state.  Lowered one by one they are three GEMV
launches at decode and three activation quantizations at prefill (the int rules quantize their input per
call).  Their weights stacked by rows are one weight (every kernel computes output rows independently), so
the group becomes ONE match over the row-concatenated plan: the rule packs and emits it as for any site, and
`torch.narrow` hands each member its columns of the output.

Only exact stacking is fused: same input node, the same activation quantization (static sites: equal steps,
zero points and channel gather — QSM plans them per input tensor, so q/k/v and gate/up share them), the same
weight format (bits, group, zero points or not), biases all absent or all graph constants.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch
import torch.fx as fx

from .pattern import LinearMatch


def _signature(m: LinearMatch):
    """What must be equal for two matches to stack, or None when `m` is never fused."""
    a = m.plan.activation
    if m.plan.input_step is not None:
        return None
    if m.bias is not None and not (isinstance(m.bias, fx.Node) and m.bias.op in ("get_attr", "placeholder")):
        return None
    w = m.plan.weight
    fields = []
    for f in dataclasses.fields(w):
        v = getattr(w, f.name)
        if isinstance(v, torch.Tensor):
            fields.append((f.name, tuple(v.shape[1:]), v.dtype, str(v.device)))
        elif f.name != "stats":
            fields.append((f.name, v))
    act = None if a is None else (a.bits, a.granularity, a.symmetric, a.clip_ratio, _fingerprint(a.scale),
                                  _fingerprint(a.zero), _fingerprint(m.plan.gather))
    return (type(w).__name__, tuple(fields), act, m.bias is None, m.out_dtype, m.weight_op, m.act_op)


def _fingerprint(t: torch.Tensor | None):
    """Equal for equal tensors (shape, dtype and bytes)."""
    if t is None:
        return None
    raw = t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return tuple(t.shape), t.dtype, hashlib.sha1(raw).hexdigest()


def sibling_groups(matches: list[tuple[LinearMatch, object]]) -> list[list[tuple[LinearMatch, object]]]:
    """Partition (match, rule) pairs, in graph order, into groups that stack (singletons included)."""
    groups: dict = {}
    for m, rule in matches:
        sig = _signature(m)
        key = (id(m), ) if sig is None else (m.x, rule.name, sig)
        groups.setdefault(key, []).append((m, rule))
    return list(groups.values())


def _stack(weights):
    """One weight plan whose rows are the members' rows, in order."""
    first = weights[0]
    values = {}
    for f in dataclasses.fields(first):
        v = getattr(first, f.name)
        if isinstance(v, torch.Tensor):
            values[f.name] = torch.cat([getattr(w, f.name) for w in weights], 0)
        else:
            values[f.name] = {} if f.name == "stats" else v
    return type(first)(**values)


def _rows(w) -> int:
    return next(int(getattr(w, f.name).shape[0]) for f in dataclasses.fields(w)
                if isinstance(getattr(w, f.name), torch.Tensor))


def stacked_match(ms: list[LinearMatch], graph: fx.Graph) -> LinearMatch:
    """The group as one match (site `a+b+c`); biases concatenated by a graph node before the first member."""
    first = ms[0]
    site = "+".join(m.site for m in ms)
    plan = dataclasses.replace(first.plan, site=site, weight=_stack([m.plan.weight for m in ms]), notes=[])
    bias = None
    if first.bias is not None:
        for m in ms:  # a constant defined after the first member moves up (get_attr has no inputs)
            if m.bias.op == "get_attr" and _after(m.bias, first.node):
                first.node.prepend(m.bias)
        with graph.inserting_before(first.node):
            bias = graph.call_function(torch.cat, ([m.bias for m in ms], 0))
    return dataclasses.replace(first, site=site, plan=plan, bias=bias)


def _after(a: fx.Node, b: fx.Node) -> bool:
    n = b
    while n.op != "root":
        if n is a:
            return True
        n = n.next
    return False


def split_output(graph: fx.Graph, fused: fx.Node, ms: list[LinearMatch]) -> list[fx.Node]:
    """Each member's columns of the stacked output (views, no copy)."""
    outs, offset = [], 0
    for m in ms:
        n = _rows(m.plan.weight)
        outs.append(graph.call_function(torch.narrow, (fused, -1, offset, n)))
        offset += n
    return outs
