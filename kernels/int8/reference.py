"""Pure-torch references of the integer linears and the activation quantizer: the CPU implementation of
qpass::int8_linear / w4a8_linear / quantize_activation_int8 and the oracle of the int8 kernels. Integer products and
their weight steps in fp64 (exact for |sum| < 2**53), activation steps in fp32, cast to the output dtype at the end."""
from __future__ import annotations

import torch

from ..formats import finish_linear, unpack_int4


def int_mm_ref(x_int8: torch.Tensor, w_int8: torch.Tensor) -> torch.Tensor:
    """Exact integer product X @ W^T as fp64 (exact for |sum| < 2**53)."""
    return x_int8.double() @ w_int8.double().t()


def _grouped_product(x_int8, w_int8, w_scale, group_size: int, x_zero=None, w_zero=None):
    """sum over groups g of w_scale[n, g] * ((X - x_zero)_g @ (W - w_zero)_g^T), as fp64 (w_scale and w_zero [N],
    or [N, ceil(K / G)])."""
    K = x_int8.shape[-1]
    x = x_int8.double() if x_zero is None else x_int8.double() - x_zero.double()
    w = w_int8.double()
    if group_size <= 0 or group_size >= K:
        if w_zero is not None:
            w = w - w_zero.double().reshape(-1, 1)
        return (x @ w.t()) * w_scale.double().reshape(1, -1)
    if w_zero is not None:
        w = w - w_zero.double().repeat_interleave(group_size, dim=1)[:, :K]  # the zero of every (n, k)
    s = w_scale.double().repeat_interleave(group_size, dim=1)[:, :K]  # the step of every (n, k)
    return x @ (w * s).t()


def _scale_epilogue(acc, x_scale, bias, out_dtype, lead_shape):
    y = acc.float()
    if x_scale is not None:
        y = y * x_scale.float().reshape(-1)[:, None]
    return finish_linear(y, bias, out_dtype, lead_shape)


def int8_linear_ref(x_int8, w_int8, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None,
                    w_zero=None):
    K = x_int8.shape[-1]
    acc = _grouped_product(x_int8.reshape(-1, K), w_int8, w_scale, group_size, x_zero, w_zero)
    return _scale_epilogue(acc, x_scale, bias, out_dtype, x_int8.shape[:-1])


def w4a8_linear_ref(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None,
                    w_zero=None):
    """With zero points the packed codes are plain nibbles [0, 15] (formats.pack_int4), else two's complement."""
    K = x_int8.shape[-1]
    w = unpack_int4(qweight, K, signed=w_zero is None)
    acc = _grouped_product(x_int8.reshape(-1, K), w, w_scale, group_size, x_zero, w_zero)
    return _scale_epilogue(acc, x_scale, bias, out_dtype, x_int8.shape[:-1])


def gather_columns(x, gather):
    """x[..., gather] with indices >= x's last dim reading 0 (QSM's zero padding); x itself without `gather`."""
    if gather is None:
        return x
    padded = torch.nn.functional.pad(x, (0, 1))
    return padded.index_select(-1, gather.clamp(max=x.shape[-1]).long())


def quantize_activation_int8_ref(x, scale, qmax: int, zero=None, gather=None, clip: float = 1.0):
    """q = clamp(round_half_even(x[..., gather] * (1/s)) + zero, -qmax-1, qmax) as int8.

    scale None: dynamic per-row s = max|x| * (clip/qmax) (rows of zeros get s = 1); else a static step (scalar or
    per-row). `zero` [K'] (integer values, static steps only): an asymmetric step's zero point shifted into the
    signed range, z - 2**(bits-1). `gather` [K']: the GEMM's column order (QSM's sort / split copies / zero pad),
    read from x in the same pass. Returns (int8 [..., K'], fp32 scale [rows])."""
    x = gather_columns(x, gather)
    K = x.shape[-1]
    xf = x.reshape(-1, K).float()
    if scale is None:
        s = xf.abs().amax(-1) * torch.tensor(clip / qmax, dtype=torch.float32)
        s = torch.where(s > 0, s, torch.ones_like(s))
    else:
        # a copy, never a view: with one row and an fp32 step the result would alias the op's input
        s = scale.float().reshape(-1).expand(xf.shape[0]).clone(memory_format=torch.contiguous_format)
    inv = 1.0 / s
    q = torch.round(xf * inv[:, None])
    if zero is not None:
        q = q + zero.float()
    q = torch.clamp(q, -qmax - 1, qmax)
    return q.to(torch.int8).reshape(x.shape), s


def w8a16_linear_ref(x, w_int8, scales, bias, group_size: int):
    """x [..., K] @ (w_int8 * scales)^T (+ bias) in fp32, cast to x's dtype: W8A16's CPU implementation and
    oracle (scales [N, 1] per row or [N, ceil(K / group_size)] per group)."""
    K = x.shape[-1]
    s = scales.float()
    if 0 < group_size < K:
        s = s.repeat_interleave(group_size, dim=1)[:, :K]
    y = x.reshape(-1, K).float() @ (w_int8.float() * s).t()
    return finish_linear(y, bias, x.dtype, x.shape[:-1])
