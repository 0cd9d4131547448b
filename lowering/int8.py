"""The integer-GEMM rules: int8 weights × int8 activations (`qpass::int8_linear`), and the shared front and back
of every int-GEMM rule (lowering/w4a8.py uses them too).

Activations are dynamic per-token, or static (QSM / SmoothQuant migrate per-channel steps into the producers and
leave one step, usually 1). A static site's quantizer also takes what QSM planned around the GEMM, so nothing else
runs per call: the per-channel zero points of asymmetric steps (shifted into the signed range; their share of each
output, a constant, is folded into the GEMM's bias), and the channel gather (sort by step, split copies, zero
pad), read by the quantizer where the GEMM wants each column. Weight steps per output row
or per (row, group of a multiple of 32); asymmetric weights add their zero points (`w_zero`, a graph constant
beside the steps, in the kernel's code form: int4 plain nibbles and zeros in [0, 15]; int8 codes and zeros
shifted by -128, 8-bit codes [0, 255] do not fit int8), whose share the GEMM subtracts in int32. Guarded sites
(QSM `keep_first` / `outlier_guard`) recompute their full-precision tokens with `qpass::restore_guarded_rows`.
"""
from __future__ import annotations

import torch
from torch import fx

from .guarded_rows import restore_guarded_rows  # noqa: F401  (registers qpass::restore_guarded_rows)
from ..capture import node_value
from ..numerics import integer_row_step
from .pattern import ACT_GUARDED, ACT_TOKEN, ACT_CHANNEL, DEQ_INT, Emit, LinearMatch, Pattern, Rule, int_group_ok, \
    uniform_step


def int_patterns(**kernel) -> tuple[Pattern, Pattern, Pattern]:
    """(dynamic, static, guarded static) patterns of one integer kernel."""
    common = dict(weight_op=DEQ_INT, integer_weight_zero=True, group_ok=int_group_ok, **kernel)
    static = dict(static_uniform_step=True, act_zero_points=True, **common)
    return (Pattern(act_op=ACT_TOKEN, **common), Pattern(act_op=ACT_CHANNEL, **static),
            Pattern(act_op=ACT_GUARDED, **static))


def _gather(m: LinearMatch) -> torch.Tensor | None:
    return None if m.plan.gather is None else m.plan.gather.to(torch.int32)


def _signed_zero(m: LinearMatch) -> torch.Tensor:
    """Per-GEMM-column zero point z - 2**(bits-1) (gathered order; 0 for padding columns, which read x = 0)."""
    a = m.plan.activation
    z = a.zero.float().reshape(-1) - 2 ** (a.bits - 1)
    g = m.plan.gather
    return z if g is None else torch.cat([z, z.new_zeros(1)])[g.clamp(max=z.numel()).long()]


def _per_group_or_row(m: LinearMatch, t: torch.Tensor) -> torch.Tensor:
    """`t` (a weight's steps or zeros) as the kernel takes it: [N, groups] per group, [N] per row; fp32."""
    return t.float() if _group(m) else t.float().reshape(-1)


def _weight_steps(m: LinearMatch) -> torch.Tensor:
    return _per_group_or_row(m, m.plan.weight.scale)


def _weight_zeros(m: LinearMatch, offset: int) -> torch.Tensor:
    """The weight's zero points in the kernel's code form (zero - offset), shaped as `_weight_steps`."""
    return _per_group_or_row(m, m.plan.weight.zero) - offset


def _group(m: LinearMatch) -> int:
    w = m.plan.weight
    return w.group_size if w.group_size and w.group_size < m.in_features else 0


def _zero_bias(m: LinearMatch) -> torch.Tensor:
    """-(x_step * z @ W^T) [N]: the activation zero points' share of every output, a constant (z and W are), so the
    GEMM runs on the codes alone (an in-kernel zero adds a row reduction per tile: the int8 GEMM took 1.65x as
    long at 4096 x 4096 on an H100, .gpu/intsteps_probe.py)."""
    w = m.plan.weight.dequantize(torch.float32).double()
    return -(uniform_step(m.plan) * (w @ _signed_zero(m).double())).float()


def _integer_row_step(m: LinearMatch) -> torch.Tensor | None:
    """Each row's step when every group's step is an integer multiple u in [1, U] of it (numerics.
    integer_group_steps: the row step is the largest group step / U), else None (float group steps)."""
    w = m.plan.weight
    if not _group(m) or w.bits != 4:
        return None
    s = w.scale.double()
    row = integer_row_step(s, w.bits, w.zero is None)
    u = s / row
    if bool(((u - u.round()).abs() < 1e-3).all() and (u.round() >= 1).all()):
        return row.reshape(-1).float()
    return None


def quantize_input(m: LinearMatch, e: Emit):
    """(int8 activation codes in the GEMM's column order, per-row step or None when it is 1, zero points [K] or
    None)."""
    a = m.plan.activation
    qmax = 2 ** (a.bits - 1) - 1
    if m.act_op is ACT_TOKEN:
        clip = (None, None, a.clip_ratio) if a.clip_ratio != 1.0 else ()  # zero, gather, clip: the default left out
        qx = e.call(torch.ops.qpass.quantize_activation_int8.default, m.x, None, qmax, *clip)
        return e.regather(e.item(qx, 0)), e.item(qx, 1), None
    s = uniform_step(m.plan)
    step = e.const("input_step", lambda: torch.tensor([s], dtype=torch.float32, device=a.scale.device))
    zero = e.const("input_zero", lambda: _signed_zero(m)) if a.zero is not None else None
    gather = e.const("input_gather", lambda: _gather(m)) if m.plan.gather is not None else None
    qx = e.call(torch.ops.qpass.quantize_activation_int8.default, m.x, step, qmax, zero, gather)
    return e.item(qx, 0), (None if s == 1.0 else e.item(qx, 1)), zero


def _has_prefix_rows(x: fx.Node, keep_first: int) -> bool:
    """Whether restore_guarded_rows (prefix guard only) can change a row of this call: False where x's length is
    static and not longer than keep_first, whose output the op would return unchanged (as a copy)."""
    v = node_value(x)
    if keep_first == 0 or (v is not None and v.dim() < 2):
        return False
    return v is None or not isinstance(v.shape[-2], int) or v.shape[-2] > keep_first


def int_linear(op, packed_weight, zero_offset: int, row_steps: bool = False):
    """A replacement emitting `op(x_int8, packed_weight, steps, x_step, bias, out_dtype, group, None[, w_zero
    [, w_step]])` (x_zero None: static zero points enter the bias; w_zero: asymmetric weights only, w_step: integer
    group steps only, so other graphs are unchanged), preceded by the site's quantizer and followed, for guarded
    sites, by the full-precision rows. packed_weight(codes, asymmetric) and zero_offset: the kernel's code form
    (codes and zeros both shifted by zero_offset); row_steps: the op takes w_step."""

    def replace(m: LinearMatch, e: Emit):
        xq, xs, zero = quantize_input(m, e)
        w = m.plan.weight
        wq = e.const("qweight", lambda: packed_weight(w.qweight, w.zero is not None))
        ws = e.const("weight_scale", lambda: _weight_steps(m))
        wz = e.const("weight_zero", lambda: _weight_zeros(m, zero_offset)) if w.zero is not None else None
        bias = m.bias
        if zero is not None:
            zb = e.const("zero_bias", lambda: _zero_bias(m))
            bias = zb if m.bias is None else e.call(torch.ops.aten.add.Tensor, m.bias, zb)
        step = _integer_row_step(m) if row_steps else None
        tail = (wz,) if step is None else (wz, e.const("weight_row_step", lambda: step))
        y = e.call(op, xq, wq, ws, xs, bias, m.out_dtype, _group(m), None, *(() if wz is None and step is None
                                                                            else tail))
        if m.act_op is not ACT_GUARDED:
            return y
        keep_first, outlier = m.act.args[4], m.act.args[5]
        if outlier == 0 and not _has_prefix_rows(m.x, keep_first):
            return y  # e.g. a decode step's graph: its one token is past the kept prefix
        a = m.plan.activation
        scale = e.const("input_scale", lambda: a.scale.float())
        zero = e.const("input_zero_raw", lambda: a.zero.float()) if a.zero is not None else None
        gather = e.const("input_gather", lambda: _gather(m)) if m.plan.gather is not None else None
        return e.call(torch.ops.qpass.restore_guarded_rows.default, y, m.x, scale, zero, a.bits, keep_first,
                      outlier, gather, wq, ws, _group(m), m.bias, *(() if wz is None else (wz,)))

    return replace


def _int8(q: torch.Tensor, asymmetric: bool) -> torch.Tensor:
    """int8 codes; asymmetric codes [0, 255] shifted by -128 (their zeros likewise: INT8_ZERO_OFFSET)."""
    return (q.to(torch.int16) - INT8_ZERO_OFFSET).to(torch.int8) if asymmetric else q.to(torch.int8)


INT8_ZERO_OFFSET = 128
DYNAMIC, STATIC, GUARDED = int_patterns(weight_bits=(8,), act_bits=(8,))
_replace = int_linear(torch.ops.qpass.int8_linear.default, _int8, INT8_ZERO_OFFSET)
RULES = [Rule("w8a8", DYNAMIC, _replace, "qpass::int8_linear"),
         Rule("w8a8-static", STATIC, _replace, "qpass::int8_linear"),
         Rule("w8a8-static-guarded", GUARDED, _replace, "qpass::int8_linear + qpass::restore_guarded_rows")]
