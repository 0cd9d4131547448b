"""W8A8: int8 weights (per output row, symmetric) × int8 activations — dynamic per-token, or static with one
step (QSM/SmoothQuant migrate per-channel steps into producers, leaving a step of 1): `qpass::int8_linear`."""
from __future__ import annotations

import torch

from .pattern import ACT_CHANNEL, ACT_TOKEN, DEQ_INT, Emit, LinearMatch, Pattern, Rule, uniform_step

_W8 = dict(weight_op=DEQ_INT, weight_bits=(8,), act_bits=(8,), symmetric_weight=True, per_row_weight_scale=True)
DYNAMIC = Pattern(act_op=ACT_TOKEN, **_W8)
STATIC = Pattern(act_op=ACT_CHANNEL, static_uniform_step=True, **_W8)


def quantize_input(m: LinearMatch, e: Emit):
    """(int8 activation after the site's gather, per-row step): the shared front half of every int-GEMM rule."""
    qmax = 2 ** (m.plan.activation.bits - 1) - 1
    step = None
    if m.act_op is ACT_CHANNEL:
        s = uniform_step(m.plan)
        step = e.const("input_step", lambda: torch.tensor([s], dtype=torch.float32, device=m.plan.activation.scale.device))
    qx = e.call(torch.ops.qpass.quantize_activation_int8.default, m.x, step, qmax)
    return e.regather(e.item(qx, 0)), e.item(qx, 1)


def replace(m: LinearMatch, e: Emit):
    w = m.plan.weight
    xq, xs = quantize_input(m, e)
    wq = e.const("qweight_int8", lambda: w.qweight.to(torch.int8))
    ws = e.const("weight_scale", lambda: w.scale.float().reshape(-1))
    return e.call(torch.ops.qpass.int8_linear.default, xq, wq, ws, xs, m.bias, m.out_dtype)


RULES = [Rule("w8a8", DYNAMIC, replace, "qpass::int8_linear"),
         Rule("w8a8-static", STATIC, replace, "qpass::int8_linear")]
