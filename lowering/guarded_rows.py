"""qpass::restore_guarded_rows: the full-precision side path of a guarded static site (QSM `keep_first` /
`outlier_guard`). The int GEMM computes every row from quantized activations; the few tokens the plan keeps in full
precision (a prefill's first positions — the attention sink —, or tokens past the outlier threshold) are recomputed
from their float input with the same integer weights, exactly as the fake-quant graph treats them
(`fake_quant_per_channel_guarded` passes them through unquantized)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from qpass import numerics
from qpass.kernels import checks as C
from qpass.kernels.define import kernel_op
from qpass.kernels.int8.reference import gather_columns

OP = "qpass::restore_guarded_rows"


def _float_rows(x: Tensor, gather: Optional[Tensor], qweight: Tensor, w_scale: Tensor, group_size: int,
                bias: Optional[Tensor], w_zero: Optional[Tensor]) -> Tensor:
    """linear(x[..., gather], (W_int - w_zero) · step): int4 weights through the W4A16 op (plain nibbles with
    zeros, as the int GEMM reads them), int8 weights dequantized here."""
    xg = gather_columns(x, gather)
    K = xg.shape[-1]
    scales = w_scale if w_scale.dim() == 2 else w_scale[:, None]
    zeros = None if w_zero is None else (w_zero if w_zero.dim() == 2 else w_zero[:, None]).float()
    if qweight.dtype == torch.uint8:  # formats.pack_int4
        return torch.ops.qpass.w4a16_linear(xg, qweight, scales.float(), zeros, bias, group_size)
    groups = group_size if 0 < group_size < K else None
    w = qweight.float()
    if zeros is not None:
        w = w - numerics.expand_groups(zeros, groups, K)
    w = w * numerics.expand_groups(scales.float(), groups, K)
    return torch.nn.functional.linear(xg.float(), w, None if bias is None else bias.float())


def _check(y, x, scale, zero, bits, keep_first, outlier, qweight, w_scale, group_size, w_zero):
    C.float_tensor(OP, "y", y)
    C.float_tensor(OP, "x", x)
    torch._check(tuple(y.shape[:-1]) == tuple(x.shape[:-1]),
                 lambda: f"{OP}: y {list(y.shape)} and x {list(x.shape)} must have the same rows")
    C.int_arg(OP, "bits", bits)
    C.int_arg(OP, "keep_first", keep_first)
    C.int_arg(OP, "group_size", group_size)
    torch._check_value(keep_first >= 0 and outlier >= 0,
                       lambda: f"{OP}: keep_first and outlier must be >= 0, got {keep_first}, {outlier}")
    torch._check_value(qweight.dtype in (torch.uint8, torch.int8),
                       lambda: f"{OP}: qweight must be formats.pack_int4 (uint8) or int8 codes, got {qweight.dtype}")
    if w_zero is not None:
        C.float_tensor(OP, "w_zero", w_zero)
        torch._check(tuple(w_zero.shape) == tuple(w_scale.shape),
                     lambda: f"{OP}: w_zero {list(w_zero.shape)} must have w_scale's shape {list(w_scale.shape)}")
    C.same_device(OP, "y", y, x=x, scale=scale, zero=zero, qweight=qweight, w_scale=w_scale, w_zero=w_zero)


@kernel_op(OP)
def restore_guarded_rows(y: Tensor, x: Tensor, scale: Tensor, zero: Optional[Tensor], bits: int, keep_first: int,
                         outlier: float, gather: Optional[Tensor], qweight: Tensor, w_scale: Tensor, group_size: int,
                         bias: Optional[Tensor], w_zero: Optional[Tensor] = None) -> Tensor:
    """y with the rows that `numerics.guarded_tokens(x, scale, zero, bits, keep_first, outlier)` selects replaced
    by linear(x[..., gather], dequantized weight, bias) (w_zero: the int GEMM's weight zero points). Prefix-only
    guards slice (no device sync); the outlier guard reads its mask back to pick the rows."""
    _check(y, x, scale, zero, bits, keep_first, outlier, qweight, w_scale, group_size, w_zero)
    out = y.clone()
    if outlier == 0:
        if x.dim() < 2 or x.shape[-2] <= keep_first or keep_first == 0:
            return out
        out[..., :keep_first, :] = _float_rows(x[..., :keep_first, :], gather, qweight, w_scale, group_size,
                                               bias, w_zero).to(y.dtype)
        return out
    keep = numerics.guarded_tokens(x, scale, zero, bits, keep_first, outlier)
    if bool(keep.any()):
        out[keep] = _float_rows(x[keep], gather, qweight, w_scale, group_size, bias, w_zero).to(y.dtype)
    return out


@restore_guarded_rows.register_inductor_decomposition
def _prefix_rows_inline(y, x, scale, zero, bits, keep_first, outlier, gather, qweight, w_scale, group_size, bias,
                        w_zero=None):
    """Under inductor the prefix guard is a slice_scatter of the kept rows into the GEMM's output, which inductor
    writes in place (the output has no other reader): the op's kernel returns a copy of all of y, a full read and
    write of a prefill's GEMM output per guarded linear. The outlier guard (rows picked from data) keeps the op."""
    if outlier != 0 or keep_first == 0 or x.dim() < 2:
        return NotImplemented
    rows = _float_rows(x[..., :keep_first, :], gather, qweight, w_scale, group_size, bias, w_zero).to(y.dtype)
    # as the kernel: an input no longer than the prefix (a decode step) keeps its GEMM rows; a tensor condition,
    # so a symbolic length needs no guard
    longer = torch.full((), x.shape[-2], dtype=torch.int64, device=x.device) > keep_first
    rows = torch.where(longer, rows, y[..., :keep_first, :])
    return torch.slice_scatter(y, rows, dim=-2, start=0, end=keep_first)


@restore_guarded_rows.register_fake
def _(y, x, scale, zero, bits, keep_first, outlier, gather, qweight, w_scale, group_size, bias, w_zero=None):
    _check(y, x, scale, zero, bits, keep_first, outlier, qweight, w_scale, group_size, w_zero)
    return torch.empty_like(y)
