"""qpass.kernels: low-bit Triton kernels registered as torch custom ops, each beside its reference."""

from . import formats, reference  # noqa: E402,F401
from . import ops  # noqa: E402,F401  (registers the qpass:: custom ops)
from .ops import (  # noqa: E402,F401
    int8_linear, quantize_activation_int8, ternary_linear, w4a8_linear, w4a16_linear,
)
from . import sale_ops  # noqa: E402,F401  (registers qpass::sale_select / qpass::sale_attention)
from . import attention_ops  # noqa: E402,F401  (registers qpass::attention, the dense attention op)
