"""W4A8 / W4A4: signed int4 weights (one scale per output row) × int8 activations (int4 values for A4),
dynamic per-token or static one-step (QSM): `qpass::w4a8_linear`."""
from __future__ import annotations

import torch

from qpass.kernels.formats import pack_int4

from .int8 import quantize_input
from .pattern import ACT_CHANNEL, ACT_TOKEN, DEQ_INT, Emit, LinearMatch, Pattern, Rule

_W4 = dict(weight_op=DEQ_INT, weight_bits=(2, 3, 4), act_bits=(4, 8), symmetric_weight=True, per_row_weight_scale=True)
DYNAMIC = Pattern(act_op=ACT_TOKEN, **_W4)
STATIC = Pattern(act_op=ACT_CHANNEL, static_uniform_step=True, **_W4)


def replace(m: LinearMatch, e: Emit):
    w = m.plan.weight
    xq, xs = quantize_input(m, e)
    wq = e.const("qweight_int4", lambda: pack_int4(w.qweight))
    ws = e.const("weight_scale", lambda: w.scale.float().reshape(-1))
    return e.call(torch.ops.qpass.w4a8_linear.default, xq, wq, ws, xs, m.bias, m.out_dtype)


RULES = [Rule("w4a8", DYNAMIC, replace, "qpass::w4a8_linear"),
         Rule("w4a8-static", STATIC, replace, "qpass::w4a8_linear")]
