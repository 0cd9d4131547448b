"""Quantize / dequantize primitives shared by passes, reference ops and tests.

Definitions (the ones every published qpass number uses):
- symmetric: scale = absmax / (2^(b-1) - 1), q = clamp(round(x / scale), -2^(b-1), 2^(b-1) - 1)
- asymmetric: scale = (max - min) / (2^b - 1), zero = round(-min / scale), q = clamp(round(x / scale) + zero, 0, 2^b - 1)
- rounding is round-half-to-even (torch.round).
Groups run along the last (input) dimension; when the group size does not divide it, the last group is shorter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# A zero-range group (all values equal to zero) gets this scale, so it quantizes to 0 instead of NaN.
_MIN_SCALE = 1e-12


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range of a `bits`-bit code."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _grouped(x: torch.Tensor, group_size: int | None, fill: float) -> torch.Tensor:
    """View `x [..., C]` as `[..., n_groups, G]`, padding a short last group with `fill`."""
    c = x.shape[-1]
    g = c if group_size is None else group_size
    n_groups = -(-c // g)
    pad = n_groups * g - c
    if pad:
        x = torch.nn.functional.pad(x, (0, pad), value=fill)
    return x.reshape(*x.shape[:-1], n_groups, g)


def expand_groups(t: torch.Tensor, group_size: int | None, columns: int) -> torch.Tensor:
    """Broadcast per-group values `[..., n_groups]` to per-column values `[..., columns]`."""
    if group_size is None:
        return t.expand(*t.shape[:-1], columns) if t.shape[-1] == 1 else t
    return t.repeat_interleave(group_size, dim=-1)[..., :columns]


def compute_qparams(
    x: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    clip_ratio: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point, if asymmetric) per row and group of `x [..., C]`: shapes `[..., n_groups]`."""
    x = x.float()
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        absmax = _grouped(x.abs(), group_size, 0.0).amax(dim=-1) * clip_ratio
        return (absmax / qmax).clamp_min(_MIN_SCALE), None
    # The range always contains 0, so zero is exact and a constant group does not collapse.
    hi = _grouped(x, group_size, float("-inf")).amax(dim=-1).clamp_min(0) * clip_ratio
    lo = _grouped(x, group_size, float("inf")).amin(dim=-1).clamp_max(0) * clip_ratio
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(_MIN_SCALE)
    zero = torch.round(-lo / scale).clamp(qmin, qmax)
    return scale, zero


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int | None,
) -> torch.Tensor:
    """Integer codes (int8 storage) of `x [..., C]` with per-group `scale`/`zero` of shape `[..., n_groups]`."""
    symmetric = zero is None
    qmin, qmax = qrange(bits, symmetric)
    c = x.shape[-1]
    q = torch.round(x.float() / expand_groups(scale, group_size, c))
    if not symmetric:
        q = q + expand_groups(zero, group_size, c)
    # int8 holds every symmetric code and asymmetric codes below 8 bits; asymmetric 8-bit needs uint8.
    return q.clamp_(qmin, qmax).to(torch.int8 if symmetric or bits < 8 else torch.uint8)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    group_size: int | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    c = q.shape[-1]
    x = q.float()
    if zero is not None:
        x = x - expand_groups(zero, group_size, c)
    return (x * expand_groups(scale, group_size, c)).to(dtype)


# Range shrink factors tried per group by the MSE clip search: 1.0 down to 0.5 (AWQ's clip grid, HQQ's range).
MSE_CLIP_GRID = tuple(1.0 - i / 40 for i in range(21))


def mse_clip_qparams(
    w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, clip_ratio: float = 1.0,
    grid: tuple[float, ...] = MSE_CLIP_GRID,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero) per row and group of `w [..., C]`, each group's range shrunk by the factor of
    `clip_ratio · grid` that minimises its own ‖w − Q(w)‖²: data-free, so an outlier weight no longer sets the
    step of its whole group when clipping it costs less than the coarser step costs every other weight."""
    w = w.float()
    best_err = best_scale = best_zero = None
    for c in grid:
        scale, zero = compute_qparams(w, bits, group_size, symmetric, clip_ratio * c)
        err = _grouped((dequantize(quantize(w, scale, zero, bits, group_size), scale, zero, group_size) - w).pow(2),
                       group_size, 0.0).sum(-1)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err  # strict: ties keep the wider range (the grid starts at the full range)
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if zero is not None:
            best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def integer_step_limit(bits: int, symmetric: bool) -> int:
    """The largest multiplier u of a row's step that keeps every (code - zero) * u inside int8: |code - zero| is at
    most 2**bits - 1 with zero points (4-bit: 15 * 8 = 120, u <= 8), 2**(bits-1) symmetric (-8 * 16 = -128:
    u <= 16)."""
    return 128 // 2 ** (bits - 1) if symmetric else 127 // (2 ** bits - 1)


def integer_group_steps(scale: torch.Tensor, zero: torch.Tensor | None,
                        bits: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each (row, group) step rounded to an integer multiple u in [1, U] of one step per row, the row's largest
    step / U (QServe's progressive group quantization), U = integer_step_limit: the integer GEMMs then form
    (code - zero) * u in int8 on the weight tile and accumulate over all of K, one float scale per row at the end
    instead of one per group. Zero points are re-centred for the new step (the group's range [lo, hi] kept)."""
    symmetric = zero is None
    row = integer_row_step(scale, bits, symmetric)
    new = row * torch.round(scale / row).clamp(1, integer_step_limit(bits, symmetric))
    if symmetric:
        return new, None
    qmin, qmax = qrange(bits, False)
    return new, torch.round(zero * scale / new).clamp(qmin, qmax)  # the group's range start -z·s kept


def integer_row_step(scale: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The row step [..., 1] of `integer_group_steps`: the row's largest group step / integer_step_limit."""
    return scale.amax(dim=-1, keepdim=True) / integer_step_limit(bits, symmetric)


@dataclass
class QuantizedWeight:
    """Integer weight `[O, C]` with per-(row, group) scales; the canonical form every weight pass produces."""

    qweight: torch.Tensor  # int8 codes, [O, C]
    scale: torch.Tensor  # float32, [O, n_groups]
    zero: torch.Tensor | None  # float32 [O, n_groups] (asymmetric) or None (symmetric)
    bits: int
    group_size: int | None  # None = one scale per output row

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.qweight, self.scale, self.zero, self.group_size, dtype)


def range_qparams(clip_search: str):
    """The (scale, zero) function of a weight range search: "none" (min/max) or "mse" (`mse_clip_qparams`)."""
    if clip_search not in ("none", "mse"):
        raise ValueError(f"clip_search must be 'none' or 'mse', got {clip_search!r}")
    return mse_clip_qparams if clip_search == "mse" else compute_qparams


def weight_qparams(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, clip_ratio: float = 1.0,
                   clip_search: str = "none", integer_steps: bool = False):
    """Scale (and zero) per row and group of a weight, as round to nearest and GPTQ's static groups set them."""
    scale, zero = range_qparams(clip_search)(w, bits, group_size, symmetric, clip_ratio)
    if integer_steps:
        scale, zero = integer_group_steps(scale, zero, bits)
    return scale, zero


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    clip_search: str = "none",
    integer_steps: bool = False,
) -> QuantizedWeight:
    """Round-to-nearest quantization of a weight `[O, C]` per row (group_size=None) or per row and group;
    clip_search "mse": each group's range shrunk as `mse_clip_qparams` finds best (within clip_ratio);
    integer_steps: the group steps then rounded by `integer_group_steps`."""
    scale, zero = weight_qparams(w, bits, group_size, symmetric, clip_ratio, clip_search, integer_steps)
    q = quantize(w, scale, zero, bits, group_size)
    return QuantizedWeight(q, scale, zero, bits, group_size)


def fake_quant(
    x: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = True, clip_ratio: float = 1.0
) -> torch.Tensor:
    """Quantize-dequantize along the last dim (per row, or per row and group), in x's dtype."""
    scale, zero = compute_qparams(x, bits, group_size, symmetric, clip_ratio)
    return dequantize(quantize(x, scale, zero, bits, group_size), scale, zero, group_size, x.dtype)


def fake_quant_per_token(x: torch.Tensor, bits: int, symmetric: bool = True, clip_ratio: float = 1.0) -> torch.Tensor:
    """Dynamic activation quantization: one scale per token (row of the last dim), computed on the fly; with
    clip_ratio < 1 the step covers clip_ratio · max|x| and the largest values saturate.

    Symmetric: the int kernels' arithmetic, bit for bit (kernels/int8/reference.py quantize_activation_int8_ref):
    step s = max|x| * fp32(clip_ratio/qmax), codes round_half_even(x * (1/s)). `max|x| / qmax` and `x / s` can
    differ from those in the last bit, and a value on a rounding tie then takes another code than the lowered
    graph's."""
    if not symmetric:
        return fake_quant(x, bits, None, symmetric, clip_ratio)
    qmin, qmax = qrange(bits, True)
    xf = x.float()
    s = xf.abs().amax(-1, keepdim=True) * torch.tensor(clip_ratio / qmax, dtype=torch.float32)
    s = torch.where(s > 0, s, torch.ones_like(s))  # a row of zeros: codes 0 whatever the step
    return (torch.round(xf * (1.0 / s)).clamp_(qmin, qmax) * s).to(x.dtype)


def fake_quant_per_channel(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
) -> torch.Tensor:
    """Static activation quantization: fixed per-input-channel `scale [C]` (and `zero [C]`) from calibration."""
    qmin, qmax = qrange(bits, zero is None)
    q = torch.round(x.float() / scale)
    if zero is not None:
        q = q + zero
    q = q.clamp_(qmin, qmax)
    if zero is not None:
        q = q - zero
    return (q * scale).to(x.dtype)


def guarded_tokens(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, keep_first: int,
                   outlier: float) -> torch.Tensor:
    """bool [...] (x's shape without its last dim): the tokens a guarded static site keeps in full precision —
    the first `keep_first` positions of a call that sees more than `keep_first` (a prefill), and (`outlier` > 0)
    any token whose max |x / scale| exceeds `outlier` × the largest code."""
    keep = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    if outlier > 0:
        qmax = 2 ** (bits - 1) - 1 if zero is None else 2**bits - 1
        keep |= (x.float() / scale).abs().amax(-1) > outlier * qmax
    if keep_first > 0 and x.dim() >= 2 and x.shape[-2] > keep_first:
        pos = torch.arange(x.shape[-2], device=x.device)
        keep |= (pos < keep_first).expand(x.shape[:-1]) if x.dim() >= 3 else pos < keep_first
    return keep
