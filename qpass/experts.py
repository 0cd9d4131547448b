"""Expert sites in the plan: each 3-D expert tensor (analysis.ExpertSite) quantized per expert, weight-only, with
the linears' numerics (its [E, out, in] weight is rounded as [E·out, in] rows: every scale and zero belongs to one
expert's row and input group), or kept in full precision with the reason; the calibration's tokens per expert
(qpass/expert_tokens.py) go to the plan's log."""
from __future__ import annotations

import torch

from .analysis import ExpertSite, GraphAnalysis
from .expert_tokens import MIN_EXPERT_TOKENS, ExpertTokens, token_report
from .passes.rounding import round_weight
from .plan import Plan, SitePlan, matches, nonfinite_reason

# Passes that plan nothing for linear weights (attention only): expert sites can follow the recipe's weights.
_WEIGHT_NEUTRAL_PASSES = {"sale"}


def unsupported_reason(recipe) -> str | None:
    """Why this recipe's expert sites stay in full precision, or None when they follow its weights."""
    a, w = recipe.activations, recipe.weights
    if a is not None:
        kind = "dynamic per-token" if a.granularity == "per_token" else "static per-channel"
        return f"experts take no quantized inputs (recipe: a{a.bits} {kind}); no expert kernel for them"
    if w is not None and w.rounding == "gptq":
        return "GPTQ on experts: per-expert Hessians are not collected (RTN is not substituted silently)"
    other = [p.name for p in recipe.passes if p.name not in _WEIGHT_NEUTRAL_PASSES]
    if other:
        return f"pass {other[0]!r} does not handle expert weights"
    return None


def expert_weight(model: torch.nn.Module, site: ExpertSite) -> torch.Tensor:
    """The site's weight in the canonical [E, out, in] layout (a view of the parameter)."""
    w = model.get_parameter(site.weight).detach()
    return w.transpose(1, 2) if site.transposed else w


@torch.no_grad()
def plan_experts(model: torch.nn.Module, recipe, analysis: GraphAnalysis, plan: Plan,
                 tokens: dict[str, ExpertTokens] | None = None, min_tokens: int = MIN_EXPERT_TOKENS) -> None:
    """Fill `plan.experts` for the recipe's weights (round to nearest, per expert row and group), or record in
    `plan.skipped` why an expert site stays in full precision; log the calibration's low-token experts."""
    sites = {s.name: s for s in analysis.experts}  # one per tensor across graphs
    reason = unsupported_reason(recipe)
    for name, site in sites.items():
        hit = next((p for p in recipe.ignore if matches(name, p)), None)
        if hit is not None:
            plan.skipped[name] = f"ignored (matches {hit!r})"
            continue
        if reason is not None:
            plan.skipped[name] = reason
            continue
        if recipe.weights is None:
            continue  # the recipe quantizes no weights: "not planned by the recipe", as for linears
        w = expert_weight(model, site).float()
        bad = nonfinite_reason(w)
        if bad is not None:
            plan.skipped[name] = bad
            continue
        E, out_f, in_f = w.shape
        rows = w.reshape(E * out_f, in_f)
        spec = recipe.weights
        q = round_weight(rows, spec, spec.clip_ratio, None)
        sp = SitePlan(name, site.weight, model.get_parameter(site.weight).dtype, weight=q)
        sp.weight_error = float((q.dequantize() - rows).norm() / rows.norm().clamp_min(1e-30))
        sp.notes.append(f"{E} experts, quantized per expert")
        plan.experts[name] = sp
    if tokens:
        plan.log.extend(token_report(tokens, min_tokens))
