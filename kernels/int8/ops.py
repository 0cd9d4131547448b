"""qpass::int8_linear, qpass::w4a8_linear (W4A8 / W4A4, QSM form) and qpass::quantize_activation_int8: the int8
Triton kernels on CUDA (imported on first use: they import triton), the pure-torch references elsewhere.

Arguments are checked (kernels/checks.py) in the implementation and the fake.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import checks as C
from . import reference as R


# ------------------------------------------------------------------ int8 x int8
@torch.library.custom_op("qpass::int8_linear", mutates_args=())
def int8_linear(x_int8: Tensor, w_int8: Tensor, w_scale: Tensor, x_scale: Optional[Tensor],
                bias: Optional[Tensor], out_dtype: torch.dtype) -> Tensor:
    """(x_int8 [..., K] @ w_int8 [N, K]^T, int32 accumulation) * w_scale[N] (* x_scale[rows]) (+ bias)."""
    C.check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "qpass::int8_linear")
    if x_int8.is_cuda:
        from .gemm import int8_linear_triton
        return int8_linear_triton(x_int8, w_int8, w_scale, x_scale, bias, out_dtype)
    return R.int8_linear_ref(x_int8, w_int8, w_scale, x_scale, bias, out_dtype)


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
    if x_int8.is_cuda:
        from .w4a8 import w4a8_linear_triton
        return w4a8_linear_triton(x_int8, qweight, w_scale, x_scale, bias, out_dtype)
    return R.w4a8_linear_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype)


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
    if x.is_cuda:
        from .quant_act import quantize_activation_int8_triton
        return quantize_activation_int8_triton(x, scale, qmax)
    return R.quantize_activation_int8_ref(x, scale, qmax)


@quantize_activation_int8.register_fake
def _(x, scale, qmax):
    C.check_quantize(x, scale, qmax)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(rows, dtype=torch.float32)
