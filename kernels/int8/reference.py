"""Pure-torch references of the integer linears and the activation quantizer: the CPU implementation of
qpass::int8_linear / w4a8_linear / quantize_activation_int8 and the oracle of the int8 kernels. Integer products in
fp64 (exact for |sum| < 2**53), scales in fp32, cast to the output dtype at the end."""
from __future__ import annotations

import torch

from ..formats import finish_linear, unpack_int4


def int_mm_ref(x_int8: torch.Tensor, w_int8: torch.Tensor) -> torch.Tensor:
    """Exact integer product X @ W^T as fp64 (exact for |sum| < 2**53)."""
    return x_int8.double() @ w_int8.double().t()


def _scale_epilogue(acc, w_scale, x_scale, bias, out_dtype, lead_shape):
    y = acc.float() * w_scale.float()[None, :]
    if x_scale is not None:
        y = y * x_scale.float().reshape(-1)[:, None]
    return finish_linear(y, bias, out_dtype, lead_shape)


def int8_linear_ref(x_int8, w_int8, w_scale, x_scale, bias, out_dtype):
    K = x_int8.shape[-1]
    acc = int_mm_ref(x_int8.reshape(-1, K), w_int8)
    return _scale_epilogue(acc, w_scale, x_scale, bias, out_dtype, x_int8.shape[:-1])


def w4a8_linear_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype):
    K = x_int8.shape[-1]
    w = unpack_int4(qweight, K, signed=True)
    acc = int_mm_ref(x_int8.reshape(-1, K), w)
    return _scale_epilogue(acc, w_scale, x_scale, bias, out_dtype, x_int8.shape[:-1])


def quantize_activation_int8_ref(x, scale, qmax: int):
    """Symmetric per-row quantization: q = clamp(round_half_even(x * (1/s)), -qmax-1, qmax).

    scale None: dynamic per-row s = max|x| * (1/qmax) (rows of zeros get s = 1); else a static step
    (scalar or per-row).  Returns (int8 [..., K], fp32 scale [rows])."""
    K = x.shape[-1]
    xf = x.reshape(-1, K).float()
    if scale is None:
        s = xf.abs().amax(-1) * torch.tensor(1.0 / qmax, dtype=torch.float32)
        s = torch.where(s > 0, s, torch.ones_like(s))
    else:
        # a copy, never a view: with one row and an fp32 step the result would alias the op's input
        s = scale.float().reshape(-1).expand(xf.shape[0]).clone(memory_format=torch.contiguous_format)
    inv = 1.0 / s
    q = torch.clamp(torch.round(xf * inv[:, None]), -qmax - 1, qmax)
    return q.to(torch.int8).reshape(x.shape), s
