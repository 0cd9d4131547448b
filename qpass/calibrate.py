"""Calibration: streaming observers on every linear's input. Observers keep running statistics only — memory is
O(channels) per site whatever the amount of data — and skip non-finite values (counted, and reported).
"""
from __future__ import annotations

from typing import Iterable

import torch
from tqdm.auto import tqdm

from .analysis import analyze
from .capture import CapturedGraph, compile_forward

# torch.quantile refuses inputs above 16M elements; subsample tokens beyond this for the percentile statistic.
_QUANTILE_MAX_ELEMENTS = 1 << 24


class ChannelObserver:
    """Per-input-channel abs-max, min, max and (optionally) a percentile of |x|, over all tokens seen."""

    def __init__(self, channels: int, percentile: float | None = None):
        self.channels = channels
        self.percentile = percentile
        self.absmax = torch.zeros(channels)
        self.min = torch.full((channels,), float("inf"))
        self.max = torch.full((channels,), float("-inf"))
        self._pct_sum = torch.zeros(channels)
        self._pct_batches = 0
        self.tokens = 0
        self.nonfinite = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.channels).float().cpu()
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            self.nonfinite += int((~finite).sum())
        lo = torch.where(finite, x, torch.full_like(x, float("inf"))).amin(0)
        hi = torch.where(finite, x, torch.full_like(x, float("-inf"))).amax(0)
        self.min = torch.minimum(self.min, lo)
        self.max = torch.maximum(self.max, hi)
        self.absmax = torch.maximum(self.absmax, torch.maximum(hi.abs(), lo.abs()).nan_to_num(0.0, 0.0, 0.0))
        self.tokens += x.shape[0]
        if self.percentile is not None:
            a = torch.where(finite, x.abs(), torch.zeros_like(x))
            stride = max(1, a.numel() // _QUANTILE_MAX_ELEMENTS + 1)
            self._pct_sum += torch.quantile(a[::stride], self.percentile / 100.0, dim=0)
            self._pct_batches += 1

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


def insert_observers(cap: CapturedGraph, observers: dict[str, ChannelObserver], site_names: set[str], percentile):
    """Graph transform: call each selected site's observer on its input (no change to the computation)."""
    for site in analyze(cap).linears:
        if site.name not in site_names:
            continue
        if site.name not in observers:
            observers[site.name] = ChannelObserver(site.in_features, percentile)
        with cap.graph.inserting_after(site.input):
            cap.graph.call_function(observers[site.name].update, (site.input,))


@torch.no_grad()
def calibrate(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    site_names: set[str],
    percentile: float | None = None,
    progress: bool = True,
) -> dict[str, ChannelObserver]:
    """Run `batches` (token ids [B, T]) through the model with observers on the selected linear sites."""
    observers: dict[str, ChannelObserver] = {}
    forward, _ = compile_forward(model, lambda cap: insert_observers(cap, observers, site_names, percentile))
    batches = list(batches)
    for ids in tqdm(batches, desc="calibrating", unit="batch", disable=not progress):
        forward(input_ids=ids, use_cache=False)
    return observers
