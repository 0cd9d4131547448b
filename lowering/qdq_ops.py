"""The fake-quant (Q/DQ) custom ops that quantized graphs are made of (the rewrite in lowering/qdq.py emits them).
Lowering rules match these and replace them with real low-bit kernels; here they run the reference numerics
(qpass.numerics).
"""
from __future__ import annotations

import torch

from qpass import numerics
from qpass.kernels import checks as C
from qpass.kernels.define import kernel_op

_INTS = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _float(op: str, name: str, t: torch.Tensor) -> None:
    torch._check_value(t.is_floating_point(), lambda: f"{op}: {name} must be a floating-point tensor, got {t.dtype}")


def _out_dtype(op: str, dtype) -> None:
    torch._check_value(isinstance(dtype, torch.dtype) and dtype.is_floating_point,
                      lambda: f"{op}: dtype must be a floating-point dtype, got {dtype}")


def _bits(op: str, bits: int) -> None:
    C.int_arg(op, "bits", bits)
    torch._check_value(2 <= bits <= 16, lambda: f"{op}: bits must lie in [2, 16], got {bits}")


def _codes(op: str, name: str, t: torch.Tensor) -> None:
    torch._check_value(t.dtype in _INTS, lambda: f"{op}: {name} must hold integer codes, got {t.dtype}")
    C.ndim(op, name, t, 2, "[O, C]")


def _groups(op: str, C_, group_size: int, minimum: int) -> int:
    C.int_arg(op, "group_size", group_size)
    what = "0 (one group per row) or positive" if minimum == 0 else "positive"
    torch._check_value(group_size >= minimum, lambda: f"{op}: group_size must be {what}, got {group_size}")
    return 1 if group_size <= 0 or group_size >= C_ else (C_ + group_size - 1) // group_size


def _channel_params(op: str, x: torch.Tensor, scale: torch.Tensor, zero) -> None:
    _float(op, "x", x)
    c = C.last_dim(op, "x", x)
    for name, t in (("scale", scale), ("zero", zero)):
        if t is None:
            continue
        _float(op, name, t)
        torch._check(t.dim() <= 1 and (t.numel() == c or t.numel() == 1),
                     lambda: f"{op}: {name} must be [C] = [{c}] (one per input channel of x), got {list(t.shape)}")
    C.same_device(op, "x", x, scale=scale, zero=zero)


def check_dequantize_weight(qweight, scale, zero, group_size, dtype, op="qpass::dequantize_weight") -> None:
    _codes(op, "qweight", qweight)
    O, c = qweight.shape
    ng = _groups(op, c, group_size, 0)
    for name, t in (("scale", scale), ("zero", zero)):
        if t is not None:
            _float(op, name, t)
            C.shape_is(op, name, t, (O, ng), f"[O, groups] for group_size={group_size}")
    _out_dtype(op, dtype)
    C.same_device(op, "qweight", qweight, scale=scale, zero=zero)


def check_trit_planes(t1, t2, alpha1, alpha2, group_size, dtype, op="qpass::dequantize_trit_planes") -> None:
    _codes(op, "t1", t1)
    _codes(op, "t2", t2)
    C.shape_is(op, "t2", t2, tuple(t1.shape), "t1's shape")
    O, c = t1.shape
    ng = _groups(op, c, group_size, 1)
    for name, t in (("alpha1", alpha1), ("alpha2", alpha2)):
        _float(op, name, t)
        C.shape_is(op, name, t, (O, ng), f"[O, groups] for group_size={group_size}")
    _out_dtype(op, dtype)
    C.same_device(op, "t1", t1, t2=t2, alpha1=alpha1, alpha2=alpha2)


@kernel_op("qpass::dequantize_weight")
def dequantize_weight(
    qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Integer weight codes [O, C] with per-(row, group) scale/zero -> weight [O, C]. group_size 0 = per row."""
    check_dequantize_weight(qweight, scale, zero, group_size, dtype)
    return numerics.dequantize(qweight, scale, zero, group_size or None, dtype)


@dequantize_weight.register_fake
def _(qweight, scale, zero, group_size, dtype):
    check_dequantize_weight(qweight, scale, zero, group_size, dtype)
    return qweight.new_empty(qweight.shape, dtype=dtype)


@kernel_op("qpass::fake_quant_per_token")
def fake_quant_per_token(x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float = 1.0) -> torch.Tensor:
    """Dynamic per-token activation quantize-dequantize (step clip_ratio · max|x| / qmax)."""
    _check_per_token(x, bits, symmetric, clip_ratio)
    return numerics.fake_quant_per_token(x, bits, symmetric, clip_ratio)


def _check_per_token(x, bits, symmetric, clip_ratio, op="qpass::fake_quant_per_token"):
    _float(op, "x", x)
    _bits(op, bits)
    torch._check_value(isinstance(symmetric, bool), lambda: f"{op}: symmetric must be a bool, got {symmetric!r}")
    torch._check_value(0 < clip_ratio <= 1, lambda: f"{op}: clip_ratio must lie in (0, 1], got {clip_ratio!r}")


@fake_quant_per_token.register_fake
def _(x, bits, symmetric, clip_ratio=1.0):
    _check_per_token(x, bits, symmetric, clip_ratio)
    return torch.empty_like(x)


@kernel_op("qpass::fake_quant_per_channel")
def fake_quant_per_channel(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int) -> torch.Tensor:
    """Static per-input-channel activation quantize-dequantize with calibrated scale [C] (and zero [C])."""
    _check_per_channel(x, scale, zero, bits)
    return numerics.fake_quant_per_channel(x, scale, zero, bits)


def _check_per_channel(x, scale, zero, bits, op="qpass::fake_quant_per_channel"):
    _channel_params(op, x, scale, zero)
    _bits(op, bits)


@fake_quant_per_channel.register_fake
def _(x, scale, zero, bits):
    _check_per_channel(x, scale, zero, bits)
    return torch.empty_like(x)


@kernel_op("qpass::fake_quant_per_channel_guarded")
def fake_quant_per_channel_guarded(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, keep_first: int, outlier: float
) -> torch.Tensor:
    """`fake_quant_per_channel`, except tokens that stay in full precision (PrefixQuant-style sink handling):
    - `keep_first > 0`: the first `keep_first` positions of a call that sees more than `keep_first` positions
      (a prefill; one-token decode steps are quantized);
    - `outlier > 0`: any token whose max |x / scale| exceeds `outlier` × the largest code (an attention sink or
      other massive-activation token that the static range would clip)."""
    _check_guarded(x, scale, zero, bits, keep_first, outlier)
    q = numerics.fake_quant_per_channel(x, scale, zero, bits)
    keep = numerics.guarded_tokens(x, scale, zero, bits, keep_first, outlier)
    return torch.where(keep[..., None], x, q)


def _check_guarded(x, scale, zero, bits, keep_first, outlier, op="qpass::fake_quant_per_channel_guarded"):
    _check_per_channel(x, scale, zero, bits, op)
    C.int_arg(op, "keep_first", keep_first)
    torch._check_value(keep_first >= 0, lambda: f"{op}: keep_first must be >= 0, got {keep_first}")
    torch._check_value(outlier >= 0, lambda: f"{op}: outlier must be >= 0 (0 = off), got {outlier}")


@fake_quant_per_channel_guarded.register_fake
def _(x, scale, zero, bits, keep_first, outlier):
    _check_guarded(x, scale, zero, bits, keep_first, outlier)
    return torch.empty_like(x)


@kernel_op("qpass::dequantize_trit_planes")
def dequantize_trit_planes(
    t1: torch.Tensor, t2: torch.Tensor, alpha1: torch.Tensor, alpha2: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Trit planes T1, T2 [O, C] in {-1,0,1} with per-(row, group) α1, α2 -> α1·T1 + α2·T2 [O, C]."""
    check_trit_planes(t1, t2, alpha1, alpha2, group_size, dtype)
    c = t1.shape[-1]
    a1 = numerics.expand_groups(alpha1.float(), group_size, c)
    a2 = numerics.expand_groups(alpha2.float(), group_size, c)
    return (a1 * t1.float() + a2 * t2.float()).to(dtype)


@dequantize_trit_planes.register_fake
def _(t1, t2, alpha1, alpha2, group_size, dtype):
    check_trit_planes(t1, t2, alpha1, alpha2, group_size, dtype)
    return t1.new_empty(t1.shape, dtype=dtype)
