"""Every shipped ternary kernel config, for the sm_90 compile check (kernels/configs.py format)."""
from __future__ import annotations

from ..tiling import split_launch
from . import dequant, gemv, gemv4, tc


def shipped_configs():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]."""
    out = []
    for dt in ("*fp16", "*bf16"):
        tsig = dict(x_ptr=dt, t1_ptr="*i32", t2_ptr="*i32", a1_ptr=dt, a2_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32",
                    K="i32", KW="i32", NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        c, o = split_launch(gemv.GEMV2_CONFIG)
        t2sig = {k: v for k, v in tsig.items() if k != "G"}
        for gw in (0, 8):
            out.append((f"ternary_gemv2[{dt},GW={gw}]", gemv._ternary_gemv2, t2sig, {"HAS_BIAS": True, "GW": gw, **c}, o))
        g4sig = dict(t2sig, NPROG="i32", t1_ptr="*u8", t2_ptr="*u8")  # gemv4 reads the packed bytes
        for kw, (bn, nw, _) in gemv4.GEMV4_TABLE.items():
            for gw in (0, 8):
                out.append((f"ternary_gemv4[{dt},KW<={kw},GW={gw}]", gemv4._ternary_gemv4, g4sig,
                            {"HAS_BIAS": True, "GW": gw, "BLOCK_N": bn, "BLOCK_KW": kw}, {"num_warps": nw}))
        for max_m, cfg in tc.TC_CONFIGS:
            c, o = split_launch(cfg)
            split = c.pop("SPLIT_K")
            out.append((f"ternary_tc[{dt},M<={max_m}]", tc._ternary_tc,  # the tile reads the packed bytes
                        dict(tsig, M="i32", K_SPLIT="i32", y_ptr="*fp32" if split > 1 else dt, t1_ptr="*u8",
                             t2_ptr="*u8"),
                        {"HAS_BIAS": False, "ATOMIC": split > 1, "FLOAT_UNPACK": True, **c}, o))
        c, o = split_launch(dequant.DEQUANT_CONFIG)
        out.append((f"ternary_dequant[{dt}]", dequant._ternary_dequant,
                    dict(t1_ptr="*i32", t2_ptr="*i32", a1_ptr=dt, a2_ptr=dt, o_ptr=dt, N="i32", K="i32", KW="i32",
                         NG="i32", G="i32"), c, o))
    return out
