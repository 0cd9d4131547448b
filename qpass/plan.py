"""The quantization plan: every decision the passes make, read by the graph transform (fake-quant insertion, then
the lowering rules), the report and the savers. Per linear site a `SitePlan` (what its weight and input become),
per attention module an `AttentionPlan` (e.g. SALE's τ). Keyed by names, so it applies to every graph Dynamo
produces for the model (first call, recompilations, graph breaks) and to the torch.export graph `qpass.save` lowers.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import MutableMapping
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import torch

from .analysis import GraphAnalysis, LinearSite
from .numerics import QuantizedWeight, qrange
from .tritplane import TritPlanes

from .specs import ActivationSpec

if TYPE_CHECKING:  # annotation only
    from .calibrate import ChannelObserver


@dataclass
class ActQuant:
    bits: int
    granularity: str  # per_token (dynamic) | per_channel (static)
    symmetric: bool
    scale: torch.Tensor | None = None  # per_channel: [C]
    zero: torch.Tensor | None = None  # per_channel asymmetric: [C]
    clip_ratio: float = 1.0  # per_token: the step is clip_ratio · max|x| / qmax (static ranges are clipped in `scale`)

    def describe(self) -> str:
        kind = "dynamic per-token" if self.granularity == "per_token" else "static per-channel"
        clip = f" clip {self.clip_ratio:g}" if self.clip_ratio != 1.0 else ""
        return f"a{self.bits} {kind}{'' if self.symmetric else ' asym'}{clip}"


@dataclass
class MigratedInput:
    """Where a static-activation site's input quantization went (QSM, docs/qsm.md): what a kernel needs beyond
    the weight and the activation steps."""

    fused_into: str  # which producer's epilogue rounds and clamps the input (or "explicit quantize node: why")
    act_clip: float  # the activation clip ratio the search chose
    delta: str  # where the output step δ is applied (the consumer's epilogue, or through RoPE, ...)
    keep_first: int = 0  # inference: the first N positions of a prefill stay in full precision (guarded op)
    outlier_guard: float = 0.0  # inference: tokens beyond this × the largest code stay in full precision
    weight_clip: float | None = None  # the weight clip ratio (set with the weights)
    reconstructed_in: int | None = None  # input width after sort / split / pad (set with the weights)

    @property
    def guarded(self) -> bool:
        return bool(self.keep_first or self.outlier_guard)


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
    migrated: MigratedInput | None = None  # qsm: where the input step went
    bits: int | None = None  # weight bits a pass chose for this site (mixed_precision); None: the recipe's

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


@dataclass
class OnlineRotation:
    """A site whose input is rotated at run time (`qpass::hadamard(x, mix)`; its weight was pre-multiplied by the
    same transform, so the product is unchanged): the rotate pass's online Hadamard before a down projection."""

    size: int  # the input width n = m·2^k
    mix: torch.Tensor | None  # [m, m] orthogonal (None: n is a power of two)


@dataclass
class SiteBits:
    """mixed_precision's choice for one site: its width (16: full precision) and its sensitivity per width."""

    bits: int
    sensitivity: dict[int, float]  # width -> the pass's sensitivity (output error or calibration NLL increase; RTN)
    weights: int  # weight count (the allocation's cost unit)


@dataclass
class AttentionPlan:
    """What the plan says about one attention module: the method (e.g. "sale") and its per-module data."""

    method: str
    taus: list[float]  # SALE: τ per query head
    options: object  # SALE: the pass's SaleOptions (blocks, sink, window, min_seq_len, pool)
    refused: str = ""  # why the method cannot run this module's attention (it runs dense; the report says why)


@dataclass
class Plan(MutableMapping):
    """Every decision for one model: a mapping site -> SitePlan (`plan["model.layers.0.mlp.up_proj"]`), plus
    `attention` ({attention module path: AttentionPlan}; empty: every SDPA node runs dense `qpass::attention`),
    `skipped` ({site: why it stays in full precision}) and `log` (the passes' notes for the report).
    Passes fill it through their PassContext; nothing else carries a decision."""

    sites: dict[str, SitePlan] = field(default_factory=dict)
    attention: dict[str, AttentionPlan] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    experts: dict[str, SitePlan] = field(default_factory=dict)  # expert tensor FQN -> its plan (qpass/experts.py)
    # site -> its run-time input rotation (rotate pass); kept whether or not the site is quantized: the site's
    # weight already holds the transform
    rotations: dict[str, OnlineRotation] = field(default_factory=dict)
    allocation: dict[str, SiteBits] = field(default_factory=dict)  # mixed_precision: site -> chosen bits
    blocks: list = field(default_factory=list)  # block-by-block calibration: time and memory per block (BlockRecord)

    def __getitem__(self, site: str) -> SitePlan:
        return self.sites[site]

    def __setitem__(self, site: str, sp: SitePlan) -> None:
        self.sites[site] = sp

    def __delitem__(self, site: str) -> None:
        del self.sites[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    def to_device(self, device: torch.device) -> None:
        """Move every tensor of the site plans to `device`, in place (the passes compute on the CPU, where the
        calibration statistics live; the packed tensors belong where the model runs)."""
        for sp in [*self.sites.values(), *self.experts.values(), *self.rotations.values()]:
            _move_tensors(sp, device)

    def quantized(self) -> list[SitePlan]:
        """The site plans that change something (a quantized weight or input)."""
        return [sp for sp in self.sites.values() if sp.weight is not None or sp.activation is not None]


def _move_tensors(obj, device: torch.device) -> None:
    """Tensors held by a dataclass (and by the dataclasses it holds: weights, activations) moved to `device`."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            setattr(obj, f.name, v.to(device))
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            _move_tensors(v, device)


def matches(name: str, pattern: str) -> bool:
    """Module-name pattern: a glob on the full name or any dotted suffix of it; "re:<regex>" for a regex search."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def nonfinite_reason(w: torch.Tensor, what: str = "weight") -> str | None:
    """"NaN/inf in weight (3 NaN, 0 inf)" when `w` is not all finite, else None (short: the report's text
    table shows 40 characters of a reason; its JSON all of it)."""
    bad = ~torch.isfinite(w)
    if not bool(bad.any()):
        return None
    nan = int(torch.isnan(w).sum())
    return f"NaN/inf in {what} ({nan} NaN, {int(bad.sum()) - nan} inf)"


def select_sites(analysis: GraphAnalysis, ignore: list[str]) -> tuple[dict[str, LinearSite], dict[str, str]]:
    """(sites to quantize, {site: why it stays in full precision}) under the recipe's `ignore` patterns."""
    skipped: dict[str, str] = {}
    selected: dict[str, LinearSite] = {}
    for site in analysis.linears:
        hit = next((p for p in ignore if matches(site.name, p)), None)
        if hit is not None:
            skipped[site.name] = f"ignored (matches {hit!r})"
        elif site.routes:  # a rounding error here changes which experts run, not just how well
            skipped[site.name] = "router: its output selects experts (top-k); routers stay in full precision"
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
