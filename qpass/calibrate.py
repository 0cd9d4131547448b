"""Calibration: streaming observers on every linear's input. Observers keep running statistics only — memory is
O(channels) per site whatever the amount of data — and skip non-finite values (counted, and reported).
"""
from __future__ import annotations

from typing import Iterable

import torch
from tqdm.auto import tqdm

from .analysis import analyze
from .capture import CapturedGraph, CompiledGraphs, compile_graphs
from .rotation import insert_online_rotations

# torch.quantile refuses inputs above 16M elements; subsample tokens beyond this for the percentile statistic.
_QUANTILE_MAX_ELEMENTS = 1 << 24


class ChannelObserver:
    """Per-input-channel abs-max, min, max and (optionally) a percentile of |x|, over all tokens seen.

    Optional statistics for data-driven passes: `skip_tokens` leaves the first tokens of each sequence out of
    every statistic (attention sinks must not set static ranges); `hessian` accumulates XᵀX (GPTQ);
    `samples` keeps up to that many random tokens (clip search, per-layer output error). `device`: where the
    statistics live and accumulate (the CPU by default; the block-by-block path keeps them on its compute device,
    where XᵀX of a wide layer is cheap).
    """

    def __init__(self, channels: int, percentile: float | None = None, *, skip_tokens: int = 0,
                 hessian: bool = False, samples: int = 0, hessian_tokens: int = 1024, sink_weight: float = 0.0,
                 device: torch.device | str = "cpu"):
        self.channels = channels
        self.device = torch.device(device)
        dev = self.device
        self.percentile = percentile
        self.skip_tokens = skip_tokens
        self.hessian = torch.zeros(channels, channels, dtype=torch.float64, device=dev) if hessian else None
        self.hessian_count = 0
        self.hessian_tokens = hessian_tokens  # per call: a random subset keeps XᵀX cheap on CPU
        # Skipped (sink) tokens still enter the Hessian, down-weighted: each counts `sink_weight` of a token.
        self.sink_weight = sink_weight
        self.sink_hessian = (torch.zeros(channels, channels, dtype=torch.float64, device=dev)
                             if hessian and skip_tokens and sink_weight > 0 else None)
        self.sink_count = 0
        self.max_samples = samples
        self.samples: torch.Tensor | None = None
        self._gen = torch.Generator().manual_seed(0)
        self.absmax = torch.zeros(channels, device=dev)
        self.min = torch.full((channels,), float("inf"), device=dev)
        self.max = torch.full((channels,), float("-inf"), device=dev)
        self._pct_sum = torch.zeros(channels, device=dev)
        self._pct_batches = 0
        self.tokens = 0
        self.nonfinite = 0  # NaN and ±inf input values seen (left out of every statistic)
        self.nan = 0  # of which NaN

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.skip_tokens and x.dim() >= 3:
            if self.sink_hessian is not None:
                sink = torch.nan_to_num(x[..., : self.skip_tokens, :].reshape(-1, self.channels).float().to(self.device), 0.0, 0.0, 0.0)
                self.sink_hessian += (sink.T @ sink).double()
                self.sink_count += sink.shape[0]
            x = x[..., self.skip_tokens :, :]
        x = x.reshape(-1, self.channels).float().to(self.device)
        if x.shape[0] == 0:
            return
        finite = torch.isfinite(x)
        clean = bool(finite.all())  # the usual case: no masking passes over x
        if not clean:
            self.nonfinite += int((~finite).sum())
            self.nan += int(torch.isnan(x).sum())
        lo = x.amin(0) if clean else torch.where(finite, x, torch.full_like(x, float("inf"))).amin(0)
        hi = x.amax(0) if clean else torch.where(finite, x, torch.full_like(x, float("-inf"))).amax(0)
        self.min = torch.minimum(self.min, lo)
        self.max = torch.maximum(self.max, hi)
        self.absmax = torch.maximum(self.absmax, torch.maximum(hi.abs(), lo.abs()).nan_to_num(0.0, 0.0, 0.0))
        self.tokens += x.shape[0]
        if self.percentile is not None:
            a = torch.where(finite, x.abs(), torch.zeros_like(x))
            stride = max(1, a.numel() // _QUANTILE_MAX_ELEMENTS + 1)
            self._pct_sum += torch.quantile(a[::stride], self.percentile / 100.0, dim=0)
            self._pct_batches += 1
        if self.hessian is not None or self.max_samples:
            self._extra(x if clean else torch.where(finite, x, torch.zeros_like(x)))

    def _extra(self, x: torch.Tensor) -> None:
        if self.hessian is not None:
            sub = x[torch.randperm(x.shape[0], generator=self._gen)[: self.hessian_tokens]]
            self.hessian += (sub.T @ sub).double()
            self.hessian_count += sub.shape[0]
        if self.max_samples:
            # Reservoir-free subsample: a fixed share of every call, trimmed to max_samples at the end.
            take = x[torch.randperm(x.shape[0], generator=self._gen)[: self.max_samples]]
            self.samples = take if self.samples is None else torch.cat([self.samples, take])
            if self.samples.shape[0] > 4 * self.max_samples:
                keep = torch.randperm(self.samples.shape[0], generator=self._gen)[: self.max_samples]
                self.samples = self.samples[keep]

    def token_samples(self) -> torch.Tensor | None:
        """Up to `samples` calibration tokens [N, C] (random, deterministic)."""
        if self.samples is None:
            return None
        if self.samples.shape[0] > self.max_samples:
            keep = torch.randperm(self.samples.shape[0], generator=torch.Generator().manual_seed(1))
            self.samples = self.samples[keep[: self.max_samples]]
        return self.samples

    def problem(self) -> str | None:
        """Why these statistics cannot be used to quantize (the site then stays in full precision), or None."""
        if self.nonfinite:
            return (f"NaN/inf calibration input ({self.nan} NaN, {self.nonfinite - self.nan} inf values "
                    f"in {self.tokens} tokens: statistics unusable)")
        if not self.tokens:
            return "no calibration tokens reached this site"
        return None

    def mean_hessian(self) -> torch.Tensor:
        """E[xᵀx] over the sampled tokens, float32 [C, C]; skipped sink tokens weighted by `sink_weight`
        (their share of the sum counts as if each sink were `sink_weight` ordinary tokens' worth of samples)."""
        if self.hessian is None or not self.hessian_count:
            raise ValueError("no Hessian was collected: calibrate with hessian=True")
        h, n = self.hessian, self.hessian_count
        if self.sink_hessian is not None and self.sink_count:
            # Per-token weight relative to the sampled tokens: the sampled share of all non-sink tokens.
            w = self.sink_weight * self.hessian_count / max(self.tokens, 1)
            h, n = h + w * self.sink_hessian, n + w * self.sink_count
        return (h / n).float()

    def range(self, observer: str, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) per channel for the chosen statistic; channels never seen finite get (0, 0)."""
        if observer == "percentile":
            hi = self._pct_sum / max(self._pct_batches, 1)
            return -hi, hi
        if observer == "absmax" or symmetric:
            return -self.absmax, self.absmax
        lo = torch.where(torch.isfinite(self.min), self.min, torch.zeros_like(self.min))
        hi = torch.where(torch.isfinite(self.max), self.max, torch.zeros_like(self.max))
        return lo, hi


def insert_observers(cap: CapturedGraph, observers: dict[str, ChannelObserver], site_names: set[str], percentile, **stats):
    """Graph transform: call each selected site's observer on its input (no change to the computation).
    Sites reading the same tensor (q/k/v; gate/up) share one observer: one update, identical statistics."""
    shared: dict = {}
    for site in analyze(cap).linears:
        if site.name not in site_names:
            continue
        if site.name not in observers:
            observers[site.name] = ChannelObserver(site.in_features, percentile, **stats)
        obs = observers[site.name]
        if site.input in shared:
            observers[site.name] = shared[site.input] if shared[site.input].channels == obs.channels else obs
            continue
        shared[site.input] = obs
        with cap.graph.inserting_after(site.input):
            cap.graph.call_function(obs.update, (site.input,))


@torch.no_grad()
def calibrate(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    site_names: set[str],
    percentile: float | None = None,
    progress: bool = True,
    expert_tokens: dict | None = None,
    rotations: dict | None = None,
    graphs: CompiledGraphs | None = None,
    **stats,
) -> dict[str, ChannelObserver]:
    """Run `batches` (token ids [B, T]) through the model with observers on the selected linear sites.
    `stats`: ChannelObserver's optional statistics (skip_tokens, hessian, samples, hessian_tokens).
    `expert_tokens`: filled with each experts module's routed tokens per expert (qpass/experts.py).
    `rotations`: the plan's online rotations ({site: OnlineRotation}): those sites' observers see the rotated input.
    `graphs`: the model's captured forward (qpass.compile's capture), run through the observers without a new trace;
    None: trace the model here."""
    from .expert_tokens import insert_token_counters

    observers: dict[str, ChannelObserver] = {}

    def transform(cap):
        if rotations:
            insert_online_rotations(cap, rotations)
        insert_observers(cap, observers, site_names, percentile, **stats)
        if expert_tokens is not None:
            insert_token_counters(cap, expert_tokens)

    if graphs is None:
        graphs = compile_graphs(model, transform)
    else:
        graphs.retransform(transform)
    forward = graphs.forward
    batches = list(batches)
    for ids in tqdm(batches, desc="calibrating", unit="batch", disable=not progress):
        forward(input_ids=ids, use_cache=False)
    return observers
