"""Every shipped Walsh–Hadamard kernel config, for the sm_90 compile check (kernels/configs.py format)."""
from __future__ import annotations

from . import fwht


def shipped_configs():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]: the power-of-two lengths
    of the models we run (widths of order · 2^k, order a Paley size such as 12, 20, 28 or 36)."""
    out = []
    for dt in ("*fp16", "*bf16", "*fp32"):
        sig = dict(x_ptr=dt, y_ptr=dt, M="i32", stride_xm="i32", stride_ym="i32", scale="fp32")
        for p in (16, 64, 128, 256, 512, 1024, 4096):
            out.append((f"fwht[{dt},P={p}]", fwht._fwht, sig,
                        {"P": p, "LOG_P": p.bit_length() - 1, "BLOCK_M": fwht.block_m(p)}, {"num_warps": 4}))
    return out
