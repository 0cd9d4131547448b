"""The fake-quant custom ops that quantized graphs are made of. Lowering rules match these and replace them with
real low-bit kernels; here they run the reference numerics (qpass.numerics).
"""
from __future__ import annotations

import torch

from . import numerics


@torch.library.custom_op("qpass::dequantize_weight", mutates_args=())
def dequantize_weight(
    qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Integer weight codes [O, C] with per-(row, group) scale/zero -> weight [O, C]. group_size 0 = per row."""
    return numerics.dequantize(qweight, scale, zero, group_size or None, dtype)


@dequantize_weight.register_fake
def _(qweight, scale, zero, group_size, dtype):
    return qweight.new_empty(qweight.shape, dtype=dtype)


@torch.library.custom_op("qpass::fake_quant_per_token", mutates_args=())
def fake_quant_per_token(x: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Dynamic per-token activation quantize-dequantize."""
    return numerics.fake_quant_per_token(x, bits, symmetric)


@fake_quant_per_token.register_fake
def _(x, bits, symmetric):
    return torch.empty_like(x)


@torch.library.custom_op("qpass::fake_quant_per_channel", mutates_args=())
def fake_quant_per_channel(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Static per-input-channel activation quantize-dequantize with calibrated scale [C] (and zero [C])."""
    return numerics.fake_quant_per_channel(x, scale, zero, bits)


@fake_quant_per_channel.register_fake
def _(x, scale, zero, bits):
    return torch.empty_like(x)


@torch.library.custom_op("qpass::fake_quant_per_channel_guarded", mutates_args=())
def fake_quant_per_channel_guarded(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, keep_first: int, outlier: float
) -> torch.Tensor:
    """`fake_quant_per_channel`, except tokens that stay in full precision (PrefixQuant-style sink handling):
    - `keep_first > 0`: the first `keep_first` positions of a call that sees more than `keep_first` positions
      (a prefill; one-token decode steps are quantized);
    - `outlier > 0`: any token whose max |x / scale| exceeds `outlier` × the largest code (an attention sink or
      other massive-activation token that the static range would clip)."""
    q = numerics.fake_quant_per_channel(x, scale, zero, bits)
    keep = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    if outlier > 0:
        qmax = 2 ** (bits - 1) - 1 if zero is None else 2**bits - 1
        keep |= (x.float() / scale).abs().amax(-1) > outlier * qmax
    if keep_first > 0 and x.dim() >= 2 and x.shape[-2] > keep_first:
        pos = torch.arange(x.shape[-2], device=x.device)
        keep |= (pos < keep_first).expand(x.shape[:-1]) if x.dim() >= 3 else pos < keep_first
    return torch.where(keep[..., None], x, q)


@fake_quant_per_channel_guarded.register_fake
def _(x, scale, zero, bits, keep_first, outlier):
    return torch.empty_like(x)


@torch.library.custom_op("qpass::dequantize_trit_planes", mutates_args=())
def dequantize_trit_planes(
    t1: torch.Tensor, t2: torch.Tensor, alpha1: torch.Tensor, alpha2: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Trit planes T1, T2 [O, C] in {-1,0,1} with per-(row, group) α1, α2 -> α1·T1 + α2·T2 [O, C]."""
    c = t1.shape[-1]
    a1 = numerics.expand_groups(alpha1.float(), group_size, c)
    a2 = numerics.expand_groups(alpha2.float(), group_size, c)
    return (a1 * t1.float() + a2 * t2.float()).to(dtype)


@dequantize_trit_planes.register_fake
def _(t1, t2, alpha1, alpha2, group_size, dtype):
    return t1.new_empty(t1.shape, dtype=dtype)
