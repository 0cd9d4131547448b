"""Weight-only int8 (and 5- to 7-bit codes, which fit the int8 container), symmetric, steps per output row or per
(row, group): `qpass::w8a16_linear`. The codes are stored as they are (int8 [N, K]), nothing to pack."""
from __future__ import annotations

import torch

from .pattern import kernel_group_ok, DEQ_INT, Emit, LinearMatch, Pattern, Rule

PATTERN = Pattern(weight_op=DEQ_INT, act_op=None, weight_bits=(5, 6, 7, 8), symmetric_weight=True,
                  group_ok=kernel_group_ok)  # the W4A16 kernels' groups: a subset of what the w8a16 kernel takes


def replace(m: LinearMatch, e: Emit):
    w = m.plan.weight
    q = e.const("qweight_int8", lambda: w.qweight.to(torch.int8))
    scales = e.const("scales", lambda: w.scale.float())
    return e.call(torch.ops.qpass.w8a16_linear.default, m.x, q, scales, m.bias, w.group_size or 0)


RULES = [Rule("w8a16", PATTERN, replace, "qpass::w8a16_linear")]
