"""Every shipped kernel config, and an sm_90 compile-only check of each (no GPU needed).

triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32)) reaches cubin and catches what the
interpreter lets through (dots with K < 16, shared-memory overflow, bad layouts).
"""
from __future__ import annotations

from .attention import decode
from .hadamard import configs as hadamard_configs
from .int4 import configs as int4_configs
from .int8 import configs as int8_configs
from .moe import configs as moe_configs
from .sale import configs as sale_configs
from .ternary import configs as ternary_configs


def shipped():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)] of every format."""
    return [*int4_configs.shipped_configs(), *int8_configs.shipped_configs(), *ternary_configs.shipped_configs(),
            *decode.shipped_configs(), *sale_configs.shipped_configs(), *moe_configs.shipped_configs(),
            *hadamard_configs.shipped_configs()]


def compile_sm90(kernel, signature, constexprs, options):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = kernel
    if not isinstance(fn, JITFunction):  # under TRITON_INTERPRET=1 @triton.jit gives an InterpretedFunction
        fn = JITFunction(kernel.fn)
    sig = {name: ("constexpr" if name in constexprs else signature[name]) for name in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(options))
