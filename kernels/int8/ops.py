"""qpass::int8_linear, qpass::w4a8_linear (W4A8 / W4A4, QSM form), qpass::w8a16_linear (int8 weights, float
activations) and qpass::quantize_activation_int8: the int8 Triton kernels on CUDA (imported on first use: they import triton), the pure-torch references elsewhere.

Arguments are checked (kernels/checks.py) in the implementation and the fake.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import checks as C
from ..define import kernel_op
from . import reference as R


@functools.cache
def _triton():
    """The Triton launchers (imported on first use, not at every call: an import statement costs µs)."""
    from . import gemm, quant_act, w4a8, w8a16
    return SimpleNamespace(plan_int8=gemm.plan_int8, plan_w4a8=w4a8.plan, plan_quantize=quant_act.plan, w8a16=w8a16)


# ------------------------------------------------------------------ int8 x int8
@kernel_op("qpass::int8_linear")
def int8_linear(x_int8: Tensor, w_int8: Tensor, w_scale: Tensor, x_scale: Optional[Tensor],
                bias: Optional[Tensor], out_dtype: torch.dtype, group_size: int = 0,
                x_zero: Optional[Tensor] = None, w_zero: Optional[Tensor] = None) -> Tensor:
    """(x_int8 [..., K] @ w_int8 [N, K]^T, int32 accumulation) * w_scale[N] (* x_scale[rows]) (+ bias);
    group_size > 0: w_scale [N, ceil(K / group_size)], each group's int32 partial product scaled by its step;
    x_zero [K]: the activation codes' zero point per column (asymmetric static steps): the product uses x - x_zero;
    w_zero (w_scale's shape, integer values): the weight codes' zero points, the product uses w_int8 - w_zero."""
    return C.planned(_check_int8, _plan_int8, x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero,
                     w_zero)(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero)


def _check_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero):
    C.check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "qpass::int8_linear", group_size,
                       x_zero, w_zero)


def _plan_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero):
    """The call for arguments of this signature (decided once per signature: kernels/checks.py `planned`)."""
    if x_int8.is_cuda:
        return _triton().plan_int8(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero)
    return R.int8_linear_ref


@int8_linear.register_fake
def _(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size=0, x_zero=None, w_zero=None):
    C.check_int_linear(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, False, "qpass::int8_linear", group_size,
                       x_zero, w_zero)
    return x_int8.new_empty(*x_int8.shape[:-1], w_int8.shape[0], dtype=out_dtype)


# ------------------------------------------------------------------ W4A8 / W4A4 (QSM)
@kernel_op("qpass::w4a8_linear")
def w4a8_linear(x_int8: Tensor, qweight: Tensor, w_scale: Tensor, x_scale: Optional[Tensor],
                bias: Optional[Tensor], out_dtype: torch.dtype, group_size: int = 0,
                x_zero: Optional[Tensor] = None, w_zero: Optional[Tensor] = None,
                w_step: Optional[Tensor] = None) -> Tensor:
    """Y = delta * (X_int @ W_int^T) (+ bias): x_int8 [..., K] (int8, or int4 values in int8 for W4A4),
    qweight = formats.pack_int4 of signed int4 [N, K], w_scale = delta [N] fp32 (static steps folded in),
    x_scale optional per-row dynamic step [rows]; group_size > 0: w_scale [N, ceil(K / group_size)]; x_zero [K]:
    the activation codes' zero point per column (the product uses x_int8 - x_zero); w_zero (w_scale's shape,
    integer values): asymmetric weights, qweight then holds plain nibbles [0, 15] and the product uses
    W_int - w_zero (as W4A16's zero points); w_step [N] (with groups): every group's step is an integer multiple
    of its row's (numerics.integer_group_steps; the lowering passes it only then), which lets prefill run one int8
    GEMM over all of K. The result is the same with or without it."""
    return C.planned(_check_w4a8, _plan_w4a8, x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero,
                     w_zero, w_step)(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero,
                                     w_step)


def _check_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step):
    C.check_int_linear(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, "qpass::w4a8_linear", group_size,
                       x_zero, w_zero, w_step)


def _plan_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step):
    """The call for arguments of this signature (decided once per signature: kernels/checks.py `planned`)."""
    if x_int8.is_cuda:
        return _triton().plan_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero,
                                   w_step)
    return _w4a8_ref


def _w4a8_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step):
    return R.w4a8_linear_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero)


@w4a8_linear.register_fake
def _(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size=0, x_zero=None, w_zero=None, w_step=None):
    C.check_int_linear(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, "qpass::w4a8_linear", group_size,
                       x_zero, w_zero, w_step)
    return x_int8.new_empty(*x_int8.shape[:-1], qweight.shape[0], dtype=out_dtype)


# ------------------------------------------------------------------ W8A16 (weight-only int8)
@kernel_op("qpass::w8a16_linear")
def w8a16_linear(x: Tensor, w_int8: Tensor, scales: Tensor, bias: Optional[Tensor], group_size: int) -> Tensor:
    """x [..., K] (fp16/bf16/fp32) @ (w_int8 [N, K] * scales)^T (+ bias), in x's dtype; scales [N, 1] per row
    (group_size <= 0) or [N, ceil(K / group_size)], symmetric (no zero points)."""
    C.check_once(C.check_w8a16, x, w_int8, scales, bias, group_size)
    if x.is_cuda:
        kernels = _triton().w8a16
        if kernels.supported_group(x.shape[-1], group_size):
            return kernels.run(x, w_int8, scales, bias, group_size)
    return R.w8a16_linear_ref(x, w_int8, scales, bias, group_size)


@w8a16_linear.register_fake
def _(x, w_int8, scales, bias, group_size):
    C.check_w8a16(x, w_int8, scales, bias, group_size)
    return x.new_empty(*x.shape[:-1], w_int8.shape[0])


# ------------------------------------------------------------------ activation quantizer
@kernel_op("qpass::quantize_activation_int8")
def quantize_activation_int8(x: Tensor, scale: Optional[Tensor], qmax: int, zero: Optional[Tensor] = None,
                             gather: Optional[Tensor] = None, clip: float = 1.0) -> Tuple[Tensor, Tensor]:
    """x [..., C] float -> (int8 [..., K], fp32 step [rows]); scale None = dynamic per-row clip · absmax / qmax
    (clip < 1: the largest values saturate), else a static step (scalar or per-row).  qmax = 127 for int8, 7 for W4A4 activations.  `zero` [K]: per-column
    zero point added before the clamp (static asymmetric steps, in the signed range); `gather` [K]: output column k
    reads x[..., gather[k]] (0 where gather[k] >= C); without it K = C."""
    return C.planned(C.check_quantize, _plan_quantize, x, scale, qmax, zero, gather, clip)(x, scale, qmax, zero, gather,
                                                                                            clip)


def _plan_quantize(x, scale, qmax, zero, gather, clip):
    """The call for arguments of this signature (decided once per signature: kernels/checks.py `planned`)."""
    return _triton().plan_quantize(x, scale, qmax, zero, gather, clip) if x.is_cuda else \
        R.quantize_activation_int8_ref


@quantize_activation_int8.register_inductor_decomposition
def _static_quantize_inline(x, scale, qmax, zero=None, gather=None, clip=1.0):
    """Under inductor a static quantize is its reference math, which is pointwise: the compiler fuses it (and the
    column gather) into the op that produces x — the RMSNorm, SiLU·up, the attention output's copy — so no kernel
    of its own runs and x need not be written out in float (a decode step launched 4 per layer). A dynamic quantize needs each
    row's absmax first: it stays this op's one-pass kernel."""
    if scale is None:
        return NotImplemented
    return R.quantize_activation_int8_ref(x, scale, qmax, zero, gather, clip)


@quantize_activation_int8.register_fake
def _(x, scale, qmax, zero=None, gather=None, clip=1.0):
    C.check_quantize(x, scale, qmax, zero, gather, clip)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    K = gather.shape[0] if gather is not None else x.shape[-1]
    return x.new_empty(*x.shape[:-1], K, dtype=torch.int8), x.new_empty(rows, dtype=torch.float32)
