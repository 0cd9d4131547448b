"""Which graph nodes write into tensors, and the value of a node that only constants compute.

Under torch.compile with static shapes HF builds a prompt's attention mask inside the graph from `arange`s and
comparisons alone when no attention mask is passed (no cache, no padding). Its value is then known when the graph
is lowered, so the attention rule can check it there once instead of at every run (lowering/attention.py)."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import unset_fake_temporarily

_IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
                       operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                       operator.imatmul}
_PURE_OPERATORS = {operator.and_, operator.or_, operator.not_, operator.is_, operator.is_not}  # named like in-place ones
# a constant mask is a few dozen nodes; random draws are not constants
_RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli", "multinomial",
           "normal", "dropout", "poisson"}
MAX_CONSTANT_NODES = 256


def mutates(node: fx.Node) -> bool:
    """The node writes into a tensor — a StaticCache's `keys.index_copy_(…)` — or is impure: FX's own purity
    check does not know Tensor methods, and dead-code elimination must keep such nodes."""
    if node.is_impure() or node.target is operator.setitem or node.target in _IN_PLACE_OPERATORS:
        return True
    if node.target in _PURE_OPERATORS:
        return False
    name = _name(node)
    return node.op in ("call_method", "call_function") and name.endswith("_") and not name.endswith("__")


def _name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def constant_value(node: fx.Node):
    """`node`'s value when it is computed by pure calls from literals alone — no graph input, no module state, no
    write into any of its inputs — evaluated here (on the devices the graph names); None otherwise, or when a call
    fails outside its graph (the node then stays a run-time value)."""
    inputs = _constant_inputs(node)
    if inputs is None:
        return None
    values: dict[fx.Node, object] = {}
    try:
        with unset_fake_temporarily(), torch.no_grad():
            for n in node.graph.nodes:  # graph order is a topological order
                if n not in inputs:
                    continue
                args, kwargs = fx.node.map_arg((n.args, n.kwargs), values.__getitem__)
                if n.op == "call_method":
                    values[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
                else:
                    values[n] = n.target(*args, **kwargs)
    except Exception:  # a call that cannot run outside its graph (symbolic sizes, tracing-only ops): not known here
        return None
    return values[node]


def _constant_inputs(node: fx.Node) -> set[fx.Node] | None:
    """`node` and every node it reads, when all are pure calls (see `constant_value`); else None."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        if n.op not in ("call_function", "call_method") or mutates(n) or _name(n) in _RANDOM \
                or len(seen) >= MAX_CONSTANT_NODES:
            return None
        seen.add(n)
        stack.extend(n.all_input_nodes)
    if any(u.op != "output" and mutates(u) for n in seen for u in n.users):  # written in place after it was made
        return None
    return seen
