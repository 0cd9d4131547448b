"""Every shipped int4 (W4A16) kernel config, for the sm_90 compile check (kernels/configs.py format)."""
from __future__ import annotations

from ..tiling import split_launch
from . import dequant, gemv, gemv2, tc

FLAGS = dict(HAS_ZERO=False, HAS_BIAS=False)


def shipped_configs():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]."""
    out = []
    for dt in ("*fp16", "*bf16"):
        sig = dict(x_ptr=dt, w_ptr="*i32", s_ptr=dt, z_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32", K="i32", KW="i32",
                   NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        sig2 = {k: v for k, v in sig.items() if k != "G"}
        c, o = split_launch(gemv2.GEMV2_CONFIG)
        for gw in (0, 16):
            out.append((f"w4a16_gemv2[{dt},GW={gw}]", gemv2._w4a16_gemv2, sig2, {**FLAGS, "GW": gw, **c}, o))
        out.append((f"w4a16_gemv2_zero[{dt}]", gemv2._w4a16_gemv2, sig2, {**FLAGS, "HAS_ZERO": True, "GW": 16, **c}, o))
        sig4 = dict(sig2, NPROG="i32", xs_ptr="*fp32", w_ptr="*u8")  # gemv4 reads the packed bytes
        for kw, (bn, nw, _) in gemv.GEMV4_TABLE.items():
            c4 = dict(BLOCK_N=bn, BLOCK_KW=kw, ONE_CHUNK=True)
            for gw, hz in ((16, False), (0, False), (16, True)):
                out.append((f"w4a16_gemv4[{dt},KW<={kw},GW={gw},zero={hz}]", gemv._w4a16_gemv4, sig4,
                            {**FLAGS, "HAS_ZERO": hz, "HAS_BIAS": True, "HAS_XS": False, "GW": gw, **c4},
                            {"num_warps": nw}))
        c, o = split_launch(gemv.GEMV4_CHUNK)
        out.append((f"w4a16_gemv4_chunked[{dt}]", gemv._w4a16_gemv4, sig4,
                    {**FLAGS, "GW": 16, "ONE_CHUNK": False, "HAS_XS": False, **c}, o))
        c, o = split_launch(dequant.DEQUANT_FLAT_CONFIG)
        fsig = dict(w_ptr="*u8", s_ptr=dt, z_ptr=dt, r_ptr=dt, o_ptr=dt, TOTAL_W="i32", KW="i32", NG="i32", G="i32")
        out.append((f"int4_dequant_flat[{dt}]", dequant._int4_dequant_flat, fsig,
                    {"HAS_ZERO": True, "INT_OUT": False, "STEPS": False, **c}, o))
        out.append((f"int4_unpack_flat_i8[{dt}]", dequant._int4_dequant_flat, dict(fsig, o_ptr="*i8"),
                    {"HAS_ZERO": False, "INT_OUT": True, "STEPS": False, **c}, o))
        out.append((f"int4_unpack_flat_i8_steps[{dt}]", dequant._int4_dequant_flat,
                    dict(fsig, s_ptr="*fp32", z_ptr="*fp32", r_ptr="*fp32", o_ptr="*i8"),
                    {"HAS_ZERO": True, "INT_OUT": True, "STEPS": True, **c}, o))
        c, o = split_launch(dequant.DEQUANT_CONFIG)
        dsig = dict(w_ptr="*u8", s_ptr=dt, z_ptr=dt, r_ptr=dt, o_ptr=dt, N="i32", K="i32", KW="i32", NG="i32",
                    G="i32")
        out.append((f"int4_dequant[{dt}]", dequant._int4_dequant, dsig,
                    {"HAS_ZERO": True, "INT_OUT": False, "STEPS": False, **c}, o))
        out.append((f"int4_unpack_i8[{dt}]", dequant._int4_dequant, dict(dsig, o_ptr="*i8"),
                    {"HAS_ZERO": False, "INT_OUT": True, "STEPS": False, **c}, o))
        tsig = dict(sig, M="i32", K_SPLIT="i32", y_ptr="*fp32", xs_ptr="*fp32", w_ptr="*u8")  # the packed bytes
        for max_m, cfg in tc.TC_CONFIGS:
            c, o = split_launch(cfg)
            split = c.pop("SPLIT_K")
            planes = c.pop("PLANES", False)
            for zero in (False, True):
                for plane_step in sorted({False, planes}):  # the plane step where the group allows it
                    out.append((f"w4a16_tc[{dt},M<={max_m},zero={zero},planes={plane_step}]", tc._w4a16_tc,
                                tsig if split > 1 else dict(tsig, y_ptr=dt),
                                {**FLAGS, "HAS_ZERO": zero, "ATOMIC": split > 1, "FLOAT_UNPACK": True,
                                 "HAS_XS": False, "PLANES": plane_step, **c}, o))
    return out
