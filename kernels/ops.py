"""Importing this module registers every qpass:: kernel op (torch custom ops: Triton on CUDA, the pure-torch
references elsewhere). Each format folder holds its ops beside its kernels:

  int4/ops.py       qpass::w4a16_linear
  int8/ops.py       qpass::int8_linear, qpass::w4a8_linear, qpass::w8a16_linear, qpass::quantize_activation_int8
  ternary/ops.py    qpass::ternary_linear
  attention/ops.py  qpass::attention
  hadamard/ops.py   qpass::hadamard
  sale/ops.py       qpass::sale_select, qpass::sale_attention

Shapes: x [..., K]; weights [N, *] row-major like nn.Linear; outputs [..., N]. Every op checks its arguments
(kernels/checks.py) in its implementation and its fake.
"""
from __future__ import annotations

from .attention import ops as attention_ops  # noqa: F401
from .hadamard import ops as hadamard_ops  # noqa: F401
from .int4 import ops as int4_ops  # noqa: F401
from .int8 import ops as int8_ops  # noqa: F401
from .moe import ops as moe_ops  # noqa: F401
from .sale import ops as sale_ops  # noqa: F401
from .ternary import ops as ternary_ops  # noqa: F401

w4a16_linear = int4_ops.w4a16_linear
int8_linear = int8_ops.int8_linear
w4a8_linear = int8_ops.w4a8_linear
w8a16_linear = int8_ops.w8a16_linear
quantize_activation_int8 = int8_ops.quantize_activation_int8
ternary_linear = ternary_ops.ternary_linear
attention = attention_ops.attention
hadamard = hadamard_ops.hadamard
sale_select = sale_ops.sale_select
sale_attention = sale_ops.sale_attention
moe_w4a16 = moe_ops.moe_w4a16
moe_linear = moe_ops.moe_linear
