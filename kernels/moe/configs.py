"""The shipped grouped-expert (qpass::moe_w4a16) kernel configs, for the sm_90 compile check (kernels/configs.py
format)."""
from __future__ import annotations

from ..tiling import split_launch
from . import grouped


def shipped_configs():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]."""
    out = []
    c, o = split_launch(grouped.MOE_CONFIG)
    for dt in ("*fp16", "*bf16"):
        sig = dict(x_ptr=dt, w_ptr="*u8", s_ptr="*fp32", z_ptr="*fp32", offs_ptr="*i64", y_ptr=dt, E="i32", N="i32",
                   K="i32", KB="i32", NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        for signed in (True, False):
            out.append((f"moe_w4a16[{dt},signed={signed}]", grouped._moe_w4a16, sig,
                        {"SIGNED": signed, "BLOCK_E": 8, **c}, o))
    return out
