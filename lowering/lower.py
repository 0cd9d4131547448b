"""The lowering graph transform: replace each fake-quant linear that a rule of the one table (rules.py) matches
by its kernel call (siblings stacked into one, lowering/fuse.py), and each attention (SDPA) node by the plan's
attention method (SALE) or the dense attention op."""
from __future__ import annotations

from typing import Callable

import torch.fx as fx

import qpass.kernels.ops  # noqa: F401  (registers every qpass:: kernel op the rules emit; kernels/ has no __init__)
from qpass.capture import LINEAR_TARGETS, SDPA_TARGETS, CapturedGraph
from qpass.plan import Plan

from .experts import insert_expert_fake_quant, lower_experts
from .fuse import sibling_groups, split_output, stacked_match
from .graph_constants import mutates
from .pattern import KERNEL_GROUPS, Emit, GroupRefusal, Pattern, SdpaPattern, match_linear, match_sdpa
from .qdq import insert_fake_quant
from .rules import RULES


def lower_graph(cap: CapturedGraph, plan: Plan, outcomes: dict[str, str], cache: dict,
                fuse: bool = True, fused: set | None = None, refused_groups: dict | None = None) -> int:
    """Lower every tagged fake-quant linear in `cap.gm`, and every SDPA node (the plan's attention method where
    it has one and fits, else dense `qpass::attention`); returns how many nodes were replaced.

    `outcomes[site]` (site: a linear's name, or an attention module's path) gets the rule's name, or
    `unmatched: <why>` (what each rule taking the same ops refused, or that no rule takes them). `cache` keeps
    packed tensors per site across graphs (recompilations). `fuse`: sibling linears (same input, same rule)
    run as one call on their row-stacked weights (lowering/fuse.py); `fused` collects each such group's sites.
    `refused_groups[site] = (rule, group, K)` for sites left unlowered because a kernel whose ops they use does
    not take their group size (see `group_size_warning`).
    """
    gm, graph = cap.gm, cap.graph
    lowered = 0
    attention = plan.attention
    matched = []  # (LinearMatch, Rule), in graph order
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in SDPA_TARGETS:
            lowered += _lower_sdpa(gm, node, attention, outcomes, cache, cap.module_path(node))
            continue
        site = node.meta.get("qpass_site")
        if site is None or node.op != "call_function" or node.target not in LINEAR_TARGETS:
            continue
        sp = plan[site]
        if sp.weight is None:
            outcomes[site] = "unmatched: activation-only quantization (no kernel takes float weights)"
            continue
        m = match_linear(node, sp)
        if m is None:
            outcomes[site] = "unmatched: the weight is not a qpass dequantize op"
            continue
        why, refused_group = [], None
        for rule in LINEAR_RULES:
            refusal = rule.pattern.refuse(m)
            if refusal is None:
                matched.append((m, rule))
                break
            if rule.pattern.fits_ops(m):
                why.append(f"{rule.name}: {refusal}")
                if isinstance(refusal, GroupRefusal) and refused_group is None:
                    refused_group = (rule.name, refusal.group, refusal.K)
        else:
            if refused_group is not None and refused_groups is not None:
                refused_groups[site] = refused_group
            near = [w for w in why if " bits " not in w]  # a rule for other widths says little
            outcomes[site] = "unmatched: " + ("; ".join(near) if near else f"no rule takes {m.describe()}")
    for group in sibling_groups(matched) if fuse else [[mr] for mr in matched]:
        lowered += _lower_linears(gm, group, cache)
        outcomes.update({m.site: rule.name for m, rule in group})
        if len(group) > 1 and fused is not None:
            fused.add(tuple(m.site for m, _ in group))
    if lowered:
        _drop_dead(gm)
    return lowered


LINEAR_RULES = [r for r in RULES if isinstance(r.pattern, Pattern)]
SDPA_RULES = [r for r in RULES if isinstance(r.pattern, SdpaPattern)]


def _lower_linears(gm: fx.GraphModule, group: list, cache: dict) -> int:
    """Replace one linear, or a group of siblings by one call on their stacked weights plus a view each."""
    graph = gm.graph
    ms, rule = [m for m, _ in group], group[0][1]
    m = ms[0] if len(ms) == 1 else stacked_match(ms, graph)
    with graph.inserting_before(ms[0].node):
        new = rule.replace(m, Emit(gm, m, cache))
        outs = [new] if len(ms) == 1 else split_output(graph, new, ms)
    for member, out in zip(ms, outs):
        out.meta.update(member.node.meta)
        member.node.replace_all_uses_with(out)
        graph.erase_node(member.node)
    return len(ms)


def _lower_sdpa(gm: fx.GraphModule, node: fx.Node, attention: dict, outcomes: dict, cache: dict, site: str) -> int:
    """The plan's attention method (e.g. SALE) when the module has one and its rule fits; otherwise the dense
    rule (the last one, no plan needed). A refused method is reported as `unmatched: <why>` although the dense
    kernel then runs: the method is what the user asked for."""
    m = match_sdpa(node, attention, site)
    why = []
    for rule in SDPA_RULES:
        refusal = rule.pattern.refuse(m)
        if refusal is None:
            with gm.graph.inserting_before(node):
                new = rule.replace(m, Emit(gm, m, cache))
            new.meta.update(node.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            outcomes[m.site or "<sdpa>"] = ("unmatched: " + "; ".join(why)) if why else rule.name
            return 1
        if m.plan is not None and rule.pattern.method == m.plan.method:
            why.append(refusal)
    outcomes[m.site or "<sdpa>"] = "unmatched: " + ("; ".join(why) or f"no rule takes {m.describe()}")
    return 0


def _drop_dead(gm: fx.GraphModule) -> None:
    """Remove the dequantize / fake-quant nodes the kernels replaced, and their now-unused buffers."""
    gm.graph.eliminate_dead_code(is_impure_node=mutates)
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [b for b in gm._buffers if b.startswith("qpass_") and b not in used]:
        del gm._buffers[name]


def quantize_transform(plan: Plan, lower: bool = True, outcomes: dict | None = None,
                       fuse: bool = True) -> Callable:
    """The one graph transform qpass runs on each captured graph: fake-quant insertion, then (if `lower`) the
    rules over the same graph. `outcomes` collects each site's lowering (for the report); `fuse`: sibling
    linears share one kernel call (lowering/fuse.py)."""
    outcomes = {} if outcomes is None else outcomes
    cache: dict = {}
    fused: set = set()
    refused_groups: dict = {}

    def transform(cap: CapturedGraph) -> None:
        insert_fake_quant(cap, plan)
        insert_expert_fake_quant(cap, plan)
        if lower:
            lower_graph(cap, plan, outcomes, cache, fuse, fused, refused_groups)
            if lower_experts(cap, plan, outcomes, cache):
                _drop_dead(cap.gm)

    transform.outcomes = outcomes
    transform.fused = fused  # sibling groups that run as one kernel call
    transform.refused_groups = refused_groups  # site -> (rule, group, K): not lowered for its group size
    return transform


def group_size_warning(refused_groups: dict, plan: Plan) -> str | None:
    """One message for all the sites a kernel refused for their group size (`transform.refused_groups`), or
    None when there are none: how many of the plan's quantized sites, which group, what the kernel takes."""
    if not refused_groups:
        return None
    by = {}
    for site, (rule, group, K) in refused_groups.items():
        by.setdefault((rule, group), []).append(site)
    seen = len(plan.quantized())
    parts = []
    for (rule, group), sites in sorted(by.items(), key=lambda kv: str(kv[0])):
        shown = ", ".join(sites[:3]) + (f", … ({len(sites) - 3} more)" if len(sites) > 3 else "")
        parts.append(f"group size {group}: the {rule} kernel takes group sizes that are {KERNEL_GROUPS}; "
                     f"{len(sites)} site{'s' if len(sites) != 1 else ''} ({shown})")
    n = len(refused_groups)
    return (f"qpass: {n} of {seen} quantized linear site{'s' if seen != 1 else ''} not lowered to qpass.kernels — "
            + "; ".join(parts) + ". They stay on the fake-quant reference path (correct but slow); use a supported "
            "group size (e.g. 64 or 128) to lower them.")
