"""torch custom ops (qpass::*): Triton on CUDA, the pure-torch reference elsewhere.

Shapes: x [..., K]; weights [N, *] row-major like nn.Linear; outputs [..., N].
Every op checks its arguments (kernels/checks.py) in its implementation and its fake: shapes (K against the
packed width, scale groups), dtypes, devices and int arguments, with messages naming the bad argument.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import checks as C
from . import reference as ref


def _on_gpu(x: Tensor) -> bool:
    return x.is_cuda


# ------------------------------------------------------------------ W4A16
@torch.library.custom_op("qpass::w4a16_linear", mutates_args=())
def w4a16_linear(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Optional[Tensor], bias: Optional[Tensor],
                 group_size: int) -> Tensor:
    """x [..., K] (fp16/bf16/fp32) @ dequant(qweight)^T; qweight = formats.pack_int4 (uint8 [N, ceil(K/8)*4]),
    scales [N, ceil(K/G)], zeros (same shape, float; None = signed symmetric), group_size <= 0 = per-channel."""
    C.check_w4a16(x, qweight, scales, zeros, bias, group_size)
    from .w4a16 import supported_group, w4a16_linear_triton
    if _on_gpu(x) and supported_group(x.shape[-1], group_size):
        return w4a16_linear_triton(x, qweight, scales, zeros, bias, group_size)
    return ref.w4a16_linear_ref(x, qweight, scales, zeros, bias, group_size)


@w4a16_linear.register_fake
def _(x, qweight, scales, zeros, bias, group_size):
    C.check_w4a16(x, qweight, scales, zeros, bias, group_size)
    return x.new_empty(*x.shape[:-1], qweight.shape[0])


# ------------------------------------------------------------------ int8 x int8
@torch.library.custom_op("qpass::int8_linear", mutates_args=())
def int8_linear(x_int8: Tensor, w_int8: Tensor, w_scale: Tensor, x_scale: Optional[Tensor],
                bias: Optional[Tensor], out_dtype: torch.dtype) -> Tensor:
    """(x_int8 [..., K] @ w_int8 [N, K]^T, int32 accumulation) * w_scale[N] (* x_scale[rows]) (+ bias)."""
    C.check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "qpass::int8_linear")
    if _on_gpu(x_int8):
        from .int8_gemm import int8_linear_triton
        return int8_linear_triton(x_int8, w_int8, w_scale, x_scale, bias, out_dtype)
    return ref.int8_linear_ref(x_int8, w_int8, w_scale, x_scale, bias, out_dtype)


@int8_linear.register_fake
def _(x_int8, w_int8, w_scale, x_scale, bias, out_dtype):
    C.check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "qpass::int8_linear")
    return x_int8.new_empty(*x_int8.shape[:-1], w_int8.shape[0], dtype=out_dtype)


# ------------------------------------------------------------------ W4A8 / W4A4 (QSM)
@torch.library.custom_op("qpass::w4a8_linear", mutates_args=())
def w4a8_linear(x_int8: Tensor, qweight: Tensor, w_scale: Tensor, x_scale: Optional[Tensor],
                bias: Optional[Tensor], out_dtype: torch.dtype) -> Tensor:
    """Y = delta * (X_int @ W_int^T) (+ bias): x_int8 [..., K] (int8, or int4 values in int8 for W4A4),
    qweight = formats.pack_int4 of signed int4 [N, K], w_scale = delta [N] fp32 (static steps folded in),
    x_scale optional per-row dynamic step [rows]."""
    C.check_int_linear(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, "qpass::w4a8_linear")
    if _on_gpu(x_int8):
        from .int8_gemm import w4a8_linear_triton
        return w4a8_linear_triton(x_int8, qweight, w_scale, x_scale, bias, out_dtype)
    return ref.w4a8_linear_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype)


@w4a8_linear.register_fake
def _(x_int8, qweight, w_scale, x_scale, bias, out_dtype):
    C.check_int_linear(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, "qpass::w4a8_linear")
    return x_int8.new_empty(*x_int8.shape[:-1], qweight.shape[0], dtype=out_dtype)


# ------------------------------------------------------------------ activation quantizer
@torch.library.custom_op("qpass::quantize_activation_int8", mutates_args=())
def quantize_activation_int8(x: Tensor, scale: Optional[Tensor], qmax: int) -> Tuple[Tensor, Tensor]:
    """x [..., K] float -> (int8 [..., K], fp32 step [rows]); scale None = dynamic per-row absmax / qmax,
    else a static step (scalar or per-row).  qmax = 127 for int8, 7 for W4A4 activations."""
    C.check_quantize(x, scale, qmax)
    if _on_gpu(x):
        from .w4a8 import quantize_activation_int8_triton
        return quantize_activation_int8_triton(x, scale, qmax)
    return ref.quantize_activation_int8_ref(x, scale, qmax)


@quantize_activation_int8.register_fake
def _(x, scale, qmax):
    C.check_quantize(x, scale, qmax)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(rows, dtype=torch.float32)


# ------------------------------------------------------------------ ternary
@torch.library.custom_op("qpass::ternary_linear", mutates_args=())
def ternary_linear(x: Tensor, t1: Tensor, t2: Tensor, alpha1: Tensor, alpha2: Tensor, bias: Optional[Tensor],
                   group_size: int) -> Tensor:
    """x [..., K] @ (diag(a1) T1 + diag(a2) T2)^T; t1, t2 = formats.pack_trits (uint8 [N, ceil(K/16)*4]),
    alpha1/alpha2 [N, ceil(K/G)]; group_size <= 0 = per-channel."""
    C.check_ternary(x, t1, t2, alpha1, alpha2, bias, group_size)
    from .ternary import supported_group
    if _on_gpu(x) and supported_group(x.shape[-1], group_size):
        from .ternary import ternary_linear_triton
        return ternary_linear_triton(x, t1, t2, alpha1, alpha2, bias, group_size)
    return ref.ternary_linear_ref(x, t1, t2, alpha1, alpha2, bias, group_size)


@ternary_linear.register_fake
def _(x, t1, t2, alpha1, alpha2, bias, group_size):
    C.check_ternary(x, t1, t2, alpha1, alpha2, bias, group_size)
    return x.new_empty(*x.shape[:-1], t1.shape[0])

# The attention ops live beside their kernels; importing this module registers every qpass:: kernel op.
from . import attention_ops, sale_ops  # noqa: E402,F401
