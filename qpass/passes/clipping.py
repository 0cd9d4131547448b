"""Adaptive clipping helpers: simulate a static-activation linear on calibration tokens and grid-search the
activation and weight clip ratios that minimise its relative output MSE."""
from __future__ import annotations

import torch

from ..gptq import gptq_quantize
from ..numerics import QuantizedWeight, quantize_weight


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


def quantize(w_g: torch.Tensor, spec, clip: float, hessian: torch.Tensor | None,
             notes: list[str] | None = None) -> QuantizedWeight:
    """RTN, or GPTQ when the recipe asks for it and a Hessian (of the gathered input) is given. GPTQ's raised
    damping (a Hessian not positive definite) is appended to `notes`; GPTQError propagates."""
    if spec.rounding == "gptq" and hessian is not None:
        info: dict = {}
        q = gptq_quantize(w_g, hessian, spec.bits, spec.group_size, spec.symmetric, clip, spec.gptq_damp,
                          spec.gptq_act_order, spec.gptq_block, spec.gptq_static_groups, info=info)
        if notes is not None and "note" in info:
            notes.append(info["note"])
        return q
    return quantize_weight(w_g, spec.bits, spec.group_size, spec.symmetric, clip)


def best_weight_clip(x_g: torch.Tensor, y: torch.Tensor, w_g: torch.Tensor, spec, grid) -> tuple[float, float]:
    """(clip ratio, rel. output MSE) of RTN weights over `grid`, inputs `x_g` already quantized and gathered."""
    best = (1.0, float("inf"))
    for c in grid:
        err = rel_mse(y, x_g @ quantize_weight(w_g, spec.bits, spec.group_size, spec.symmetric, c).dequantize().T)
        if err < best[1]:
            best = (c, err)
    return best
