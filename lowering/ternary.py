"""Trit-plane weights W = diag(α1)·T1 + diag(α2)·T2, 16-bit activations: `qpass::ternary_linear`."""
from __future__ import annotations

import torch

from qpass.kernels.formats import pack_trits

from .pattern import kernel_group_ok, DEQ_TRIT, Emit, LinearMatch, Pattern, Rule

PATTERN = Pattern(weight_op=DEQ_TRIT, act_op=None, group_ok=kernel_group_ok)


def replace(m: LinearMatch, e: Emit):
    tp = m.plan.weight
    t1 = e.const("t1_packed", lambda: pack_trits(tp.t1))
    t2 = e.const("t2_packed", lambda: pack_trits(tp.t2))
    a1 = e.const("alpha1", lambda: tp.alpha1.float())
    a2 = e.const("alpha2", lambda: tp.alpha2.float())
    return e.call(torch.ops.qpass.ternary_linear.default, m.x, t1, t2, a1, a2, m.bias, tp.group_size)


RULES = [Rule("ternary", PATTERN, replace, "qpass::ternary_linear")]
