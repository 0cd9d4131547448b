"""qpass.lowering: rules from fake-quant linears to the qpass.kernels ops (see docs/lowering.md)."""
from .lower import Plan, lower_graph, quantize_transform  # noqa: F401
from .pattern import AttentionPlan, Emit, LinearMatch, Pattern, Rule, SdpaMatch, SdpaPattern  # noqa: F401
from .sale import attention_plans  # noqa: F401
from .rules import RULES  # noqa: F401
