"""The quantization plan: per linear site, what its weight and input become. Passes fill it; the fake-quant graph
transform (and later the lowering rules) read it. Keyed by site name, so it applies to every graph Dynamo
produces for the model (first call, recompilations, graph breaks).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import torch

from .analysis import GraphAnalysis, LinearSite
from .calibrate import ChannelObserver
from .numerics import QuantizedWeight, qrange
from .recipe import ActivationSpec, Recipe
from .tritplane import TritPlanes


@dataclass
class ActQuant:
    bits: int
    granularity: str  # per_token (dynamic) | per_channel (static)
    symmetric: bool
    scale: torch.Tensor | None = None  # per_channel: [C]
    zero: torch.Tensor | None = None  # per_channel asymmetric: [C]

    def describe(self) -> str:
        kind = "dynamic per-token" if self.granularity == "per_token" else "static per-channel"
        return f"a{self.bits} {kind}{'' if self.symmetric else ' asym'}"


@dataclass
class SitePlan:
    site: str
    weight_fqn: str
    dtype: torch.dtype
    weight: QuantizedWeight | TritPlanes | None = None
    activation: ActQuant | None = None
    weight_error: float | None = None  # ‖W − Ŵ‖ / ‖W‖
    notes: list[str] = field(default_factory=list)
    # Static-activation passes (qsm, smoothquant) may add:
    input_step: torch.Tensor | None = None  # [C]: explicit x / step before quantizing (no producer could absorb it)
    gather: torch.Tensor | None = None  # [C'] int64: the GEMM reads x[..., gather] (sort, split, pad; C = zero pad)
    output_error: float | None = None  # relative output MSE on calibration tokens, ‖Y − Ŷ‖² / ‖Y‖²
    lowering: dict = field(default_factory=dict)  # what a kernel needs beyond weight/activation (see docs/qsm.md)

    def describe(self) -> str:
        parts = []
        if isinstance(self.weight, TritPlanes):
            parts.append(f"ternary 2-plane g{self.weight.group_size}")
        elif self.weight is not None:
            w = self.weight
            group = f"g{w.group_size}" if w.group_size else "per-channel"
            parts.append(f"w{w.bits} {group}{'' if w.zero is None else ' asym'}")
        if self.activation is not None:
            parts.append(self.activation.describe())
        return " · ".join(parts) or "full precision"


def matches(name: str, pattern: str) -> bool:
    """Module-name pattern: a glob on the full name or any dotted suffix of it; "re:<regex>" for a regex search."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


class SiteSelection(dict):
    """{name: LinearSite} of the sites to quantize, carrying `skipped` ({site: why it stays in full precision}):
    a pass context that drops a site later (non-finite weight or statistics) records the reason there, in the
    same dict the report reads."""

    def __init__(self, *args, skipped: dict[str, str] | None = None, **kw):
        super().__init__(*args, **kw)
        self.skipped = {} if skipped is None else skipped


def nonfinite_reason(w: torch.Tensor, what: str = "weight") -> str | None:
    """"NaN/inf in weight (3 NaN, 0 inf)" when `w` is not all finite, else None (short: the report's text
    table shows 40 characters of a reason; its JSON all of it)."""
    bad = ~torch.isfinite(w)
    if not bool(bad.any()):
        return None
    nan = int(torch.isnan(w).sum())
    return f"NaN/inf in {what} ({nan} NaN, {int(bad.sum()) - nan} inf)"


def select_sites(analysis: GraphAnalysis, recipe: Recipe) -> tuple[dict[str, LinearSite], dict[str, str]]:
    """(sites to quantize, {site: why it stays in full precision}); the first is a SiteSelection whose
    `.skipped` is the second."""
    skipped: dict[str, str] = {}
    selected = SiteSelection(skipped=skipped)
    for site in analysis.linears:
        hit = next((p for p in recipe.ignore if matches(site.name, p)), None)
        if hit is not None:
            skipped[site.name] = f"ignored (matches {hit!r})"
        else:
            selected[site.name] = site
    return selected, skipped


def static_activation(spec: ActivationSpec, obs: ChannelObserver) -> ActQuant:
    """Per-channel static scale (and zero) from calibration statistics."""
    qmin, qmax = qrange(spec.bits, spec.symmetric)
    lo, hi = obs.range(spec.observer, spec.symmetric)
    lo, hi = lo * spec.clip_ratio, hi * spec.clip_ratio
    if spec.symmetric:
        scale = (torch.maximum(hi.abs(), lo.abs()) / qmax).clamp_min(1e-12)
        return ActQuant(spec.bits, "per_channel", True, scale)
    lo, hi = lo.clamp_max(0), hi.clamp_min(0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(1e-12)
    zero = torch.round(-lo / scale).clamp(qmin, qmax)
    return ActQuant(spec.bits, "per_channel", False, scale, zero)
