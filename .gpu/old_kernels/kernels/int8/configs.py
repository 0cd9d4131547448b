"""Every shipped int8 / W4A8 kernel config, for the sm_90 compile check (kernels/configs.py format)."""
from __future__ import annotations

from ..int4 import gemv
from ..tiling import split_launch
from . import gemm, persistent
from . import gemv as int_gemv
from . import quant_act
from .quant_act import _quant_act


def shipped_configs():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]."""
    out = []
    isig = dict(x_ptr="*i8", w_ptr="*i8", ws_ptr="*fp32", xs_ptr="*fp32", xz_ptr="*fp32", wz_ptr="*fp32",
                b_ptr="*bf16", y_ptr="*bf16", M="i32", N="i32", K="i32", K_SPLIT="i32", stride_xm="i32", stride_wn="i32",
                stride_ym="i32", NG="i32")
    for max_m, cfg in [*gemm.GROUPED_CONFIGS, ("32,long-K", gemm.GROUPED_LONG_K_CONFIG)]:
        for int4 in (False, True):
            for wz in (False, True):  # symmetric weights, or with zero points (asymmetric QSM)
                c, o = split_launch(cfg)
                atomic = c.pop("SPLIT_K", 1) > 1
                sig = dict(isig, w_ptr="*u8") if int4 else isig
                sig = dict(sig, y_ptr="*fp32") if atomic else sig
                out.append((f"{'w4a8' if int4 else 'int8'}-grouped{'-wzero' if wz else ''}[M<={max_m}]",
                            gemm._int8_mm, sig, {"GROUP": 64, "HAS_XZ": True, "HAS_WZ": wz, "W_INT4": int4,
                                                 "HAS_XS": False, "HAS_BIAS": True, "UNPACK": 0, "ATOMIC": atomic,
                                                 "LOOP_STAGES": None, **c}, o))
    decode_m, decode = gemm.INT8_CONFIGS[0]  # with the narrower N tiles of int8 weights there (gemm.decode_block_n)
    narrow = [(f"{decode_m},BLOCK_N={bn}", dict(decode, BLOCK_N=bn)) for bn in (64, 32)]
    for table, int4 in ((gemm.INT8_CONFIGS + narrow, False), (gemm.W4A8_CONFIGS, True)):
        for max_m, cfg in table:
            c, o = split_launch(cfg)
            sig = dict(isig, w_ptr="*u8") if int4 else isig
            out.append((f"{'w4a8' if int4 else 'int8'}[M<={max_m}]", gemm._int8_mm, sig,
                        {"GROUP": 0, "HAS_XZ": False, "HAS_WZ": False, "W_INT4": int4, "HAS_XS": True,
                         "HAS_BIAS": True, "UNPACK": 0, "ATOMIC": False, "LOOP_STAGES": None, **c}, o))
    c, o = split_launch(persistent.CONFIG)
    psig = dict(x_desc=f"tensordesc<i8[{c['BLOCK_M']}, {c['BLOCK_K']}]>",
                w_desc=f"tensordesc<i8[{c['BLOCK_N']}, {c['BLOCK_K']}]>", ws_ptr="*fp32", xs_ptr="*fp32",
                b_ptr="*bf16", y_ptr="*bf16", M="i32", N="i32", K="i32", stride_ym="i32", NPROG="i32")
    for xs in (False, True):
        out.append((f"int8-persistent[xs={xs}]", persistent._int8_mm_persistent, psig,
                    {"HAS_XS": xs, "HAS_BIAS": True, **c}, o))
    qsig = dict(x_ptr="*bf16", s_ptr="*fp32", z_ptr="*fp32", g_ptr="*i32", q_ptr="*i8", so_ptr="*fp32", K="i32",
                C="i32", stride_xm="i32", stride_qm="i32", stride_s="i32", qmax="i32", qinv="fp32")
    out.append(("quant_act", _quant_act, qsig, {"STATIC": False, "HAS_ZERO": False, "GATHER": False, "BLOCK_K": 4096},
                {"num_warps": 4}))
    ssig = dict(x_ptr="*bf16", s_ptr="*fp32", z_ptr="*fp32", g_ptr="*i32", q_ptr="*i8", so_ptr="*fp32", M="i32",
                K="i32", C="i32", stride_xm="i32", stride_qm="i32", stride_s="i32", qmax="i32")
    small_m = dict(quant_act.STATIC_CONFIG, BLOCK_R=1, BLOCK_K=quant_act.SMALL_M_BLOCK_K)  # one row (decode)
    for name, cfg in (("", quant_act.STATIC_CONFIG), ("-one-row", small_m)):
        c, o = split_launch(cfg)
        for zero, gather in ((False, False), (True, True)):
            out.append((f"quant_static{name}[zero={zero},gather={gather}]", quant_act._quant_static, ssig,
                        {"HAS_ZERO": zero, "GATHER": gather, **c}, o))
    c, o = split_launch(quant_act.ROW_GATHER_CONFIG)
    for cp in (4096, 16384):  # Llama-3-8B's hidden and (padded) MLP widths
        out.append((f"quant_static_row_gather[CP={cp}]", quant_act._quant_static_row_gather, ssig,
                    {"HAS_ZERO": True, "CP": cp, **c}, o))
    # per-row steps and zeros (dynamic W4A8 / W8A8 with asymmetric weights)
    for table, int4 in ((gemm.INT8_CONFIGS, False), (gemm.W4A8_CONFIGS, True)):
        c, o = split_launch(table[-1][1])
        sig = dict(isig, w_ptr="*u8") if int4 else isig
        out.append((f"{'w4a8' if int4 else 'int8'}-wzero[M>{table[-2][0]}]", gemm._int8_mm, sig,
                    {"GROUP": 0, "HAS_XZ": False, "HAS_WZ": True, "W_INT4": int4, "HAS_XS": True, "HAS_BIAS": True,
                     "UNPACK": 0, "ATOMIC": False, "LOOP_STAGES": None, **c}, o))
    # W4A8 at one row (w4a8._w4a8_gemv): fp32 row scales and step, model-dtype out
    for y in ("*fp16", "*bf16"):
        wsig = dict(x_ptr="*i8", w_ptr="*u8", s_ptr="*fp32", z_ptr="*fp32", b_ptr=y, xs_ptr="*fp32", y_ptr=y,
                    N="i32", K="i32", KW="i32", NG="i32", stride_xm="i32", stride_ym="i32", NPROG="i32")
        for kw, (bn, nw, _) in gemv.GEMV4_TABLE.items():  # with activation zero points
            out.append((f"w4a8_gemv4[{y},KW<={kw}]", gemv._w4a16_gemv4, wsig,
                        {"HAS_ZERO": False, "HAS_BIAS": True, "HAS_XS": True, "GW": 0, "BLOCK_N": bn, "BLOCK_KW": kw,
                         "ONE_CHUNK": True}, {"num_warps": nw}))
        # the integer-dot GEMV (int8/gemv.py), g64 with and without zero points, and its long-K chunk config
        for kw, (bn, nw, _) in [*int_gemv.DP4A_TABLE.items(), (None, (None, None, None))]:
            for zero in (False, True):
                if kw is None:
                    c, o = split_launch(dict(int_gemv.DP4A_CHUNK, ONE_CHUNK=False))
                else:
                    c, o = dict(BLOCK_N=bn, BLOCK_KW=kw, ONE_CHUNK=True), {"num_warps": nw}
                out.append((f"w4a8_gemv_dp4a[{y},KW<={kw or 'any'},zero={zero}]", int_gemv._w4a8_gemv_dp4a, wsig,
                            {"HAS_ZERO": zero, "HAS_BIAS": True, "HAS_XS": True, "GW": 8, "HW": True, **c}, o))
    return out
