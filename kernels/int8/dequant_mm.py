"""The integer linears at prefill sizes with per-group weight steps: dequantize the weight once (one HBM pass),
then cuBLAS. The tiled int GEMM scales every 64-wide K tile by its group's step, which keeps its MMAs from
pipelining (kernels/int8/gemm.py GROUPED_CONFIGS); at many rows one float GEMM is faster. Exact inputs: integer
activation codes (minus their zero points) are exact in bf16/fp16 up to 256; the weight is the fake-quant graph's
own `dequantize_weight` in the compute dtype."""
from __future__ import annotations

import torch.nn.functional as F

from ..int4.dequant import dequantize_int4_triton


def dequant_mm(x_int8, w, w_scale, x_scale, bias, out_dtype, group_size: int, x_zero, w_int4: bool, w_zero=None):
    """Y = ((x_int8 - x_zero) @ dequant(w)^T) (* x_scale[rows]) (+ bias), computed in out_dtype (fp32 for fp32);
    dequant(w) = (w - w_zero) * w_scale per row or (row, group) (int4 with zeros: plain nibbles)."""
    K = x_int8.shape[-1]
    N = w.shape[0]
    grouped = 0 < group_size < K
    scales = (w_scale if grouped else w_scale.reshape(N, 1)).float()
    zeros = None if w_zero is None else (w_zero if grouped else w_zero.reshape(N, 1)).float()
    if w_int4:
        wd = dequantize_int4_triton(w, scales, zeros, group_size if grouped else 0, K, out_dtype)
    else:
        s = scales.repeat_interleave(group_size, 1)[:, :K] if grouped else scales
        wf = w.float()
        if zeros is not None:
            wf = wf - (zeros.repeat_interleave(group_size, 1)[:, :K] if grouped else zeros)
        wd = (wf * s).to(out_dtype)
    x = x_int8.reshape(-1, K)
    x = (x.float() - x_zero).to(out_dtype) if x_zero is not None else x.to(out_dtype)
    y = F.linear(x, wd)
    if x_scale is not None:
        y = (y.float() * x_scale.reshape(-1, 1).float()).to(out_dtype)
    if bias is not None:
        y = y + bias.to(out_dtype)
    return y.reshape(*x_int8.shape[:-1], N)
