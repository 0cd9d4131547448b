"""Every shipped kernel config, and an sm_90 compile-only check of each (no GPU needed).

triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32)) reaches cubin and catches what the
interpreter lets through (dots with K < 16, shared-memory overflow, bad layouts).
"""
from __future__ import annotations

from . import attention, gemv, int8_gemm, sale, ternary, w4a16
from .w4a8 import _quant_act

_LAUNCH = ("num_warps", "num_stages")


def _split(cfg):
    return {k: v for k, v in cfg.items() if k not in _LAUNCH}, {k: v for k, v in cfg.items() if k in _LAUNCH}


def shipped():
    """[(name, kernel, signature (non-constexpr args), constexprs, launch options)]."""
    out = []
    fp, act = "*fp16", "*bf16"
    for dt in (fp, act):
        flags = dict(HAS_ZERO=False, HAS_BIAS=False)
        sig = dict(x_ptr=dt, w_ptr="*i32", s_ptr=dt, z_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32", K="i32", KW="i32",
                   NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        c, o = _split(w4a16.GEMV_CONFIG)
        out.append((f"w4a16_gemv[{dt}]", w4a16._w4a16_gemv, sig, {**flags, **c}, o))
        out.append((f"w4a16_gemv_zero[{dt}]", w4a16._w4a16_gemv, sig, {**flags, "HAS_ZERO": True, **c}, o))
        sig2 = {k: v for k, v in sig.items() if k != "G"}
        c, o = _split(w4a16.GEMV2_CONFIG)
        for gw in (0, 16):
            out.append((f"w4a16_gemv2[{dt},GW={gw}]", w4a16._w4a16_gemv2, sig2, {**flags, "GW": gw, **c}, o))
        out.append((f"w4a16_gemv2_zero[{dt}]", w4a16._w4a16_gemv2, sig2, {**flags, "HAS_ZERO": True, "GW": 16, **c}, o))
        sig4 = dict(sig2, NPROG="i32", xs_ptr="*fp32")
        for kw, (bn, nw, _) in gemv.GEMV4_TABLE.items():
            c4 = dict(BLOCK_N=bn, BLOCK_KW=kw, ONE_CHUNK=True)
            for gw, hz in ((16, False), (0, False), (16, True)):
                out.append((f"w4a16_gemv4[{dt},KW<={kw},GW={gw},zero={hz}]", gemv._w4a16_gemv4, sig4,
                            {**flags, "HAS_ZERO": hz, "HAS_BIAS": True, "HAS_XS": False, "GW": gw, **c4},
                            {"num_warps": nw}))
        c, o = _split({k: v for k, v in gemv.GEMV4_CHUNK.items()})
        out.append((f"w4a16_gemv4_chunked[{dt}]", gemv._w4a16_gemv4, sig4,
                    {**flags, "GW": 16, "ONE_CHUNK": False, "HAS_XS": False, **c}, o))
        c, o = _split(w4a16.MM_CONFIG)
        out.append((f"w4a16_mm[{dt}]", w4a16._w4a16_mm, dict(sig, M="i32"),
                    {**flags, "SCALAR_G": True, **c}, o))
        c, o = _split(w4a16.DEQUANT_FLAT_CONFIG)
        fsig = dict(w_ptr="*i32", s_ptr=dt, z_ptr=dt, o_ptr=dt, TOTAL_W="i32", KW="i32", NG="i32", G="i32")
        out.append((f"int4_dequant_flat[{dt}]", w4a16._int4_dequant_flat, fsig, {"HAS_ZERO": True, "INT_OUT": False, **c}, o))
        out.append((f"int4_unpack_flat_i8[{dt}]", w4a16._int4_dequant_flat, dict(fsig, o_ptr="*i8"),
                    {"HAS_ZERO": False, "INT_OUT": True, **c}, o))
        c3, o3 = _split(w4a16.GEMV3_CONFIG)
        out.append((f"w4a16_gemv3[{dt}]", w4a16._w4a16_gemv3, sig, {**flags, **c3}, o3))
        c, o = _split(w4a16.DEQUANT_CONFIG)
        dsig = dict(w_ptr="*i32", s_ptr=dt, z_ptr=dt, o_ptr=dt, N="i32", K="i32", KW="i32", NG="i32", G="i32")
        out.append((f"int4_dequant[{dt}]", w4a16._int4_dequant, dsig, {"HAS_ZERO": True, "INT_OUT": False, **c}, o))
        out.append((f"int4_unpack_i8[{dt}]", w4a16._int4_dequant, dict(dsig, o_ptr="*i8"),
                    {"HAS_ZERO": False, "INT_OUT": True, **c}, o))
        sig_tc = dict(sig, M="i32")
        for max_m, cfg in w4a16.TC_CONFIGS:
            c, o = _split(cfg)
            for gsub in sorted({32, c["BLOCK_K"]}):
                out.append((f"w4a16_tc[{dt},M<={max_m},gsub={gsub}]", w4a16._w4a16_tc, sig_tc,
                            {**flags, "HAS_ZERO": gsub == 32, **c, "GSUB": gsub}, o))
        tsig = dict(x_ptr=dt, t1_ptr="*i32", t2_ptr="*i32", a1_ptr=dt, a2_ptr=dt, b_ptr=dt, y_ptr=dt, N="i32",
                    K="i32", KW="i32", NG="i32", G="i32", stride_xm="i32", stride_ym="i32")
        c, o = _split(ternary.GEMV_CONFIG)
        out.append((f"ternary_gemv[{dt}]", ternary._ternary_gemv, tsig, {"HAS_BIAS": True, **c}, o))
        c, o = _split(ternary.GEMV2_CONFIG)
        t2sig = {k: v for k, v in tsig.items() if k != "G"}
        for gw in (0, 8):
            out.append((f"ternary_gemv2[{dt},GW={gw}]", ternary._ternary_gemv2, t2sig, {"HAS_BIAS": True, "GW": gw, **c}, o))
        c3, o3 = _split(ternary.GEMV3_CONFIG)
        out.append((f"ternary_gemv3[{dt}]", ternary._ternary_gemv3, tsig, {"HAS_BIAS": True, **c3}, o3))
        for max_m, cfg in ternary.TC_CONFIGS:
            c, o = _split(cfg)
            for gsub in sorted({32, c["BLOCK_K"]}):
                out.append((f"ternary_tc[{dt},M<={max_m},gsub={gsub}]", ternary._ternary_tc, dict(tsig, M="i32"),
                            {"HAS_BIAS": False, **c, "GSUB": gsub}, o))
    isig = dict(x_ptr="*i8", w_ptr="*i8", ws_ptr="*fp32", xs_ptr="*fp32", b_ptr="*bf16", y_ptr="*bf16", M="i32",
                N="i32", K="i32", stride_xm="i32", stride_wn="i32", stride_ym="i32")
    for table, int4 in ((int8_gemm.INT8_CONFIGS, False), (int8_gemm.W4A8_CONFIGS, True)):
        for max_m, cfg in table:
            c, o = _split(cfg)
            sig = dict(isig, w_ptr="*i32") if int4 else isig
            out.append((f"{'w4a8' if int4 else 'int8'}[M<={max_m}]", int8_gemm._int8_mm, sig,
                        {"W_INT4": int4, "HAS_XS": True, "HAS_BIAS": True, "UNPACK": 0, **c}, o))
    qsig = dict(x_ptr="*bf16", s_ptr="*fp32", q_ptr="*i8", so_ptr="*fp32", K="i32", stride_xm="i32",
                stride_qm="i32", qmax="i32", qinv="fp32")
    out.append(("quant_act", _quant_act, qsig, {"STATIC": False, "BLOCK_K": 4096}, {"num_warps": 4}))
    # W4A8 at one row (int8_gemm._w4a8_gemv): gemv4 on the int8 row, fp32 row scales and step, model-dtype out
    for y in ("*fp16", "*bf16"):
        wsig = dict(x_ptr="*i8", w_ptr="*i32", s_ptr="*fp32", z_ptr="*fp32", b_ptr=y, xs_ptr="*fp32", y_ptr=y,
                    N="i32", K="i32", KW="i32", NG="i32", stride_xm="i32", stride_ym="i32", NPROG="i32")
        for kw, (bn, nw, _) in gemv.GEMV4_TABLE.items():
            out.append((f"w4a8_gemv4[{y},KW<={kw}]", gemv._w4a16_gemv4, wsig,
                        {"HAS_ZERO": False, "HAS_BIAS": True, "HAS_XS": True, "GW": 0, "BLOCK_N": bn, "BLOCK_KW": kw,
                         "ONE_CHUNK": True}, {"num_warps": nw}))
    out.extend(attention.shipped_configs())  # qpass::attention decode kernels (split + combine)
    out.extend(sale.shipped_configs())
    return out


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
