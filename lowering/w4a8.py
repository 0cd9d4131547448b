"""W4A8 / W4A4: int4 weights (steps per output row or per (row, group); symmetric, or asymmetric with a zero point
per step: plain nibbles, formats.pack_int4) × int8 activations (int4 values for A4), dynamic per-token or static
(QSM, zero points and gather in the quantizer): `qpass::w4a8_linear`.
The shared quantizer / bias / guarded-row handling is lowering/int8.py's."""
from __future__ import annotations

import torch

from qpass.kernels.formats import pack_int4

from .int8 import int_linear, int_patterns
from .pattern import Rule

DYNAMIC, STATIC, GUARDED = int_patterns(weight_bits=(2, 3, 4), act_bits=(4, 8))
_replace = int_linear(torch.ops.qpass.w4a8_linear.default, lambda q, asymmetric: pack_int4(q), 0, row_steps=True)
RULES = [Rule("w4a8", DYNAMIC, _replace, "qpass::w4a8_linear"),
         Rule("w4a8-static", STATIC, _replace, "qpass::w4a8_linear"),
         Rule("w4a8-static-guarded", GUARDED, _replace, "qpass::w4a8_linear + qpass::restore_guarded_rows")]
