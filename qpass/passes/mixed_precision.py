"""Mixed precision by sensitivity: each site's output error on calibration data at every candidate width, then
bits per site (qpass/allocation.py) meeting an average-bits target, or the fewest bits whose calibration
perplexity stays within a bound. The quantize step then rounds each site at its width (RTN or GPTQ, as the
recipe's `weights` say); a site given 16 bits stays in full precision with that reason in the report."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..allocation import FULL, SiteCost, allocate, average_bits, bits_per_weight
from ..numerics import quantize_weight
from ..plan import SiteBits
from ..schema import Checked, RecipeError, opt
from .context import PassContext
from .rounding import at_bits


@dataclass
class MixedPrecisionOptions(Checked):
    schema_name = "mixed_precision"  # errors name `mixed_precision.<option>`

    target_bits: float | None = opt(None, range="[2, 16]")  # average bits per weight, scales and zeros counted
    max_ppl_increase: float | None = opt(None, range="(0, inf)")  # relative: 0.1 = calibration perplexity +10 %
    candidates: list[int] = opt(default_factory=lambda: [2, 3, 4, 8, 16], min_len=1, item_range="[2, 16]")
    # output_error: tr(ΔW H ΔWᵀ), no model run; fisher: the same error per output channel weighted by the
    # channel's mean squared loss gradient (one forward + backward over the calibration data: the error the loss
    # sees, docs/mixed_precision.md); loss: the calibration NLL increase with only that site rounded (a model run
    # per site and width)
    sensitivity: Literal["output_error", "fisher", "loss"] = "fisher"

    def check_fields(self, path: str) -> None:
        if self.target_bits is not None and self.max_ppl_increase is not None:
            raise RecipeError(f"{path}: set exactly one of target_bits, max_ppl_increase")
        if self.target_bits is None and self.max_ppl_increase is None:
            self.target_bits = 4.25  # neither given: the 4.25 average bits
        bad = [b for b in self.candidates if b not in (2, 3, 4, 8, FULL)]
        if bad:
            raise RecipeError(f"{path}.candidates: {bad} not supported; allowed: 2, 3, 4, 8, 16")

    def check_recipe(self, recipe, path: str) -> None:
        if recipe.weights is None or recipe.activations is not None:
            raise RecipeError(f"{path}: mixed_precision allocates weight bits: it needs `weights` and no "
                              "`activations` (weight-only)")


def statistics(opts: MixedPrecisionOptions) -> dict:
    return {"hessian": True}  # the sensitivity is the output error tr(ΔW H ΔWᵀ)


def runs_model(opts: MixedPrecisionOptions) -> bool:
    return opts.max_ppl_increase is not None or opts.sensitivity != "output_error"


def _spec(ctx: PassContext, bits: int):
    return at_bits(ctx.weights, bits)  # the same spec the quantize step rounds with


@torch.no_grad()
def mixed_precision(ctx: PassContext, opts: MixedPrecisionOptions) -> None:
    costs, fake = [], {}
    grad2 = _output_grad2(ctx) if opts.sensitivity == "fisher" else {}
    for name, site in ctx.sites.items():
        w = ctx.weight(site).float()
        h = ctx.observers[name].mean_hessian().float()
        options, deq = {}, {}
        for b in opts.candidates:
            if b >= FULL:
                options[b] = (float(FULL), 0.0)
                continue
            spec = _spec(ctx, b)
            q = quantize_weight(w, b, spec.group_size, spec.symmetric, spec.clip_ratio, spec.clip_search)
            d = q.dequantize() - w
            per_row = ((d @ h) * d).sum(1)  # E[Δy_n²] per output channel
            error = per_row @ grad2[name].to(per_row) if name in grad2 else per_row.sum()
            options[b] = (bits_per_weight(b, w.shape[1], spec.group_size, spec.symmetric), float(error))
            deq[b] = q.dequantize()
        costs.append(SiteCost(name, w.numel(), options))
        fake[name] = deq
    if opts.sensitivity == "loss":
        _loss_sensitivity(ctx, costs, fake)
    if opts.target_bits is not None:
        choice = allocate(costs, opts.target_bits)
        how = f"target {opts.target_bits} bits"
    else:
        choice, how = _within_ppl(ctx, costs, fake, opts)
    for c in costs:
        b = choice[c.name]
        ctx.plan.allocation[c.name] = SiteBits(b, {k: v[1] for k, v in c.options.items()}, c.weights)
        if b >= FULL:
            ctx.keep_full_precision(c.name, "mixed precision: 16 bits chosen (most sensitive per bit)")
        else:
            ctx.site_plan(ctx.sites[c.name]).bits = b
    storage = sum(c.weights * (FULL if choice[c.name] >= FULL else bits_per_weight(
        choice[c.name], ctx.sites[c.name].in_features, _spec(ctx, choice[c.name]).group_size,
        _spec(ctx, choice[c.name]).symmetric, storage=True)) for c in costs) / sum(c.weights for c in costs)
    hist = {b: sum(1 for v in choice.values() if v == b) for b in sorted(set(choice.values()))}
    ctx.log.append(f"mixed precision ({how}): {average_bits(costs, choice):.4f} bits per weight with scales/zeros "
                   f"(storage {storage:.4f}: 2/3-bit codes in int4 containers); sites per width "
                   + ", ".join(f"{b}-bit: {n}" for b, n in hist.items()))


def _nll_sum(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of `ids` [B, T] under `logits` [B, T, V]."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")


def _calib_nll(ctx: PassContext) -> float:
    """Mean next-token NLL of the model copy on the calibration batches."""
    dev = next(ctx.model.parameters()).device
    total, n = 0.0, 0
    for ids in ctx.calib:
        ids = ids.to(dev)
        total += float(_nll_sum(ctx.model(ids).logits, ids))
        n += ids[:, 1:].numel()
    return total / n


def _output_grad2(ctx: PassContext) -> dict[str, torch.Tensor]:
    """Per site, the mean over calibration tokens of the squared gradient of the NLL with respect to each output
    channel (the diagonal Fisher of the site's output): Δy's cost to the loss is ≈ Σ_n E[g_n²] E[Δy_n²]."""
    if not ctx.calib:
        raise ValueError("mixed_precision sensitivity: fisher needs calibration data (it runs the model)")
    sums, hooks = {}, []

    def keep(name):
        def hook(module, args, out):
            def accumulate(g):
                g2 = g.detach().float().pow(2).flatten(0, -2).sum(0)
                sums[name] = sums[name] + g2 if name in sums else g2
            out.register_hook(accumulate)
        return hook

    for name, site in ctx.sites.items():
        module = ctx.model.get_submodule(site.weight.rpartition(".")[0])
        hooks.append(module.register_forward_hook(keep(name)))
    dev = next(ctx.model.parameters()).device
    embed = ctx.model.get_input_embeddings()
    tokens = 0
    frozen = [p for p in ctx.model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            for ids in ctx.calib:
                ids = ids.to(dev)
                x = embed(ids).detach().requires_grad_(True)  # gradients reach the activations, never the weights
                _nll_sum(ctx.model(inputs_embeds=x).logits, ids).backward()
                tokens += ids[:, 1:].numel()
    finally:
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    missing = [n for n in ctx.sites if n not in sums]
    if missing:
        raise ValueError(f"mixed_precision sensitivity: fisher: no gradient reached {missing[:3]} (their output "
                         "does not lead to the loss in the model's forward)")
    return {n: v / tokens for n, v in sums.items()}


def _swap(ctx: PassContext, name: str, w: torch.Tensor) -> torch.Tensor:
    """Put `w` ([out, in]) into the model copy's parameter of site `name`; returns what was there."""
    site = ctx.sites[name]
    p = ctx.model.get_parameter(site.weight)
    saved = p.detach().clone()
    p.copy_((w.t() if site.transposed else w).to(p.device, p.dtype))
    return saved


def _loss_sensitivity(ctx: PassContext, costs, fake) -> None:
    """Replace each site's sensitivity by the calibration NLL increase with only that site rounded at each width."""
    if not ctx.calib:
        raise ValueError("mixed_precision sensitivity: loss needs calibration data (it runs the model)")
    base = _calib_nll(ctx)
    for c in costs:
        for b, deq in fake[c.name].items():
            saved = _swap(ctx, c.name, deq)
            try:
                c.options[b] = (c.options[b][0], max(_calib_nll(ctx) - base, 0.0))
            finally:
                site = ctx.sites[c.name]
                ctx.model.get_parameter(site.weight).copy_(saved)


def _within_ppl(ctx: PassContext, costs, fake, opts):
    """The smallest average-bits target (bisection) whose allocation, with round-to-nearest weights swapped into
    the model copy, keeps calibration perplexity within (1 + max_ppl_increase) × full precision."""
    if not ctx.calib:
        raise ValueError("mixed_precision max_ppl_increase needs calibration data (it measures perplexity)")
    base = _calib_nll(ctx)
    limit = base + math.log1p(opts.max_ppl_increase)
    total = sum(c.weights for c in costs)
    lo = sum(c.weights * min(v[0] for v in c.options.values()) for c in costs) / total
    hi = sum(c.weights * max(v[0] for v in c.options.values()) for c in costs) / total

    def nll(choice) -> float:
        saved = {}
        for c in costs:
            b = choice[c.name]
            if b < FULL:
                site = ctx.sites[c.name]
                p = ctx.model.get_parameter(site.weight)
                saved[c.name] = p.detach().clone()
                d = fake[c.name][b]
                p.copy_((d.t() if site.transposed else d).to(p.device, p.dtype))
        try:
            return _calib_nll(ctx)
        finally:
            for name, v in saved.items():
                ctx.model.get_parameter(ctx.sites[name].weight).copy_(v)

    best = allocate(costs, hi)
    best_nll = nll(best)
    for _ in range(8):  # bisection on the target: ~0.05 bit resolution over [2, 16]
        mid = (lo + hi) / 2
        choice = allocate(costs, mid)
        value = nll(choice)
        if value <= limit:
            hi, best, best_nll = mid, choice, value
        else:
            lo = mid
    return best, (f"calibration perplexity {math.exp(base):.4f} -> {math.exp(best_nll):.4f} with round-to-nearest "
                  f"weights, bound {math.exp(limit):.4f} (+{opts.max_ppl_increase:.1%})")
