"""SmoothQuant: per-channel smoothing s_j = max|X_j|^α / max|W_:,j|^(1−α), migrated exactly with the same
machinery as QSM (X ← X / s in the producer, W ← W·diag(s)). Calibration statistics are rescaled, not re-collected."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schema import Checked, opt
from ..migration import apply, find_migrations, rescale_observer
from .context import PassContext


@dataclass
class SmoothQuantOptions(Checked):
    schema_name = "smoothquant"  # errors name `smoothquant.<option>`

    alpha: float = opt(0.5, range="[0, 1]")  # migration strength: 0 leaves X alone, 1 moves all of its range into W


@torch.no_grad()
def smoothquant(ctx: PassContext, opts: SmoothQuantOptions) -> None:
    """Smooth activation outliers into the weights (exact) before quantization."""
    by_name = ctx.analysis.by_name()
    done, skipped = 0, []
    for m in find_migrations(ctx.analysis, ctx.sites):
        if not m.exact:
            skipped.append(f"{', '.join(m.sites)} ({m.reason})")
            continue
        obs = ctx.observers[m.sites[0]]
        wmax = torch.stack([ctx.weight(by_name[n]).float().abs().amax(0) for n in m.sites]).amax(0)
        s = (obs.absmax.clamp_min(1e-5) ** opts.alpha / wmax.clamp_min(1e-5) ** (1 - opts.alpha)).clamp(1e-4, 1e4)
        s = m.tie(s)
        apply(ctx.model, ctx.analysis, m, s)
        rescale_observer(obs, s)
        done += 1
    ctx.log.append(f"smoothquant α={opts.alpha}: {done} input tensors smoothed")
    ctx.log.extend([f"smoothquant: not smoothed (no exact migration): {s}" for s in skipped])
