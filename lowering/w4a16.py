"""Weight-only int4 (and 2/3-bit codes, which fit the int4 container): `qpass::w4a16_linear`."""
from __future__ import annotations

import torch

from qpass.kernels.formats import pack_int4

from .pattern import kernel_group_ok, DEQ_INT, Emit, LinearMatch, Pattern, Rule

PATTERN = Pattern(weight_op=DEQ_INT, act_op=None, weight_bits=(2, 3, 4), group_ok=kernel_group_ok)


def replace(m: LinearMatch, e: Emit):
    w = m.plan.weight
    q = e.const("qweight_int4", lambda: pack_int4(w.qweight))
    scales = e.const("scales", lambda: w.scale.float())
    zeros = e.const("zeros", lambda: w.zero.float()) if w.zero is not None else None
    return e.call(torch.ops.qpass.w4a16_linear.default, m.x, q, scales, zeros, m.bias, w.group_size or 0)


RULES = [Rule("w4a16", PATTERN, replace, "qpass::w4a16_linear")]
