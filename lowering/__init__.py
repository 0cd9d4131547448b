"""qpass.lowering: rules from fake-quant linears to the qpass.kernels ops (see docs/lowering.md)."""
from .lower import lower_graph, quantize_transform  # noqa: F401
from .pattern import Emit, LinearMatch, Pattern, Rule  # noqa: F401
from .rules import RULES  # noqa: F401
