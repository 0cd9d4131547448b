"""Adaptive clipping helpers: simulate a static-activation linear on calibration tokens and grid-search the
activation and weight clip ratios that minimise its relative output MSE."""
from __future__ import annotations

import torch

from ..numerics import fake_quant_per_token, quantize_weight


def int_act(x: torch.Tensor, bits: int, zero: torch.Tensor | None = None) -> torch.Tensor:
    """Round + clamp at unit step: what a producer's fused epilogue emits once the step migrated. Symmetric codes
    [-2^(b-1), 2^(b-1)-1]; with a per-channel `zero`, codes [0, 2^b-1] and the zero subtracted back (x̂ = q - z)."""
    if zero is None:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return torch.round(x).clamp_(lo, hi)
    return (torch.round(x) + zero).clamp_(0, 2**bits - 1) - zero


def gather_cols(x: torch.Tensor, gather: torch.Tensor | None, div: torch.Tensor | None = None) -> torch.Tensor:
    """x[..., gather] with index C meaning a zero pad; `div` divides each gathered column (split copies)."""
    if gather is None:
        return x
    if int(gather.max()) >= x.shape[-1]:
        x = torch.nn.functional.pad(x, (0, 1))
    x = x.index_select(-1, gather)
    return x if div is None else x / div


def rel_mse(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    return float((y - y_hat).pow(2).sum() / y.pow(2).sum().clamp_min(1e-30))


def best_weight_clip(x_g: torch.Tensor, y: torch.Tensor, w_g: torch.Tensor, spec, grid) -> tuple[float, float]:
    """(clip ratio, rel. output MSE) of RTN weights over `grid`, inputs `x_g` already quantized and gathered."""
    best = (1.0, float("inf"))
    for c in grid:
        err = rel_mse(y, x_g @ quantize_weight(w_g, spec.bits, spec.group_size, spec.symmetric, c,
                                               spec.clip_search, spec.integer_group_steps).dequantize().T)
        if err < best[1]:
            best = (c, err)
    return best


def per_token_error(x: torch.Tensor, step: torch.Tensor, y: torch.Tensor, deq: torch.Tensor, bits: int,
                    gather: torch.Tensor | None = None) -> float:
    """Rel. output MSE of a static site's quantized weights `deq` had its input been quantized per token at run
    time (dynamic, symmetric) instead of with its static steps: `x` are calibration tokens in the migrated domain
    (x / step), so x · step is the tensor a dynamic quantizer would see. Measures static vs dynamic steps alone."""
    xd = fake_quant_per_token(x * step, bits) / step
    return rel_mse(y, gather_cols(xd, gather) @ deq.T)
