"""THE rule table: every lowering from a fake-quant linear, or an attention (SDPA) node, to a qpass kernel,
tried in this order.

Each family file holds its patterns (pattern.Pattern: which activation op, which weight op, which bits /
groups / symmetry the kernel supports; pattern.SdpaPattern: which attention method's plan, or none for the
dense rule, which comes last) and a replacement that packs the plan's tensors (integer weights with `qpass.kernels.formats`, SALE's τ) and emits the
kernel op. See docs/lowering.md for how to add a rule.
"""
from __future__ import annotations

from . import attention, int8, sale, ternary, w4a8, w4a16, w8a16
from .pattern import Rule

RULES: list[Rule] = [*w4a16.RULES, *w8a16.RULES, *int8.RULES, *w4a8.RULES, *ternary.RULES, *sale.RULES, *attention.RULES]
