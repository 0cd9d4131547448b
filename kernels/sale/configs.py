"""Every shipped SALE kernel config, for the sm_90 compile check (kernels/configs.py format): the quantize,
select v1 / v2 / exact-pass and sparse attention kernels at the shapes the defaults launch, plus the variants
`benchmarks/attention.py --quick` sweeps (QB, split, bias MMA, NPI, attention launch configs)."""
from __future__ import annotations

from .attention import ATTN2_CONFIG, _sale_attn2_kernel, attn2_tail
from .dispatch import ATTN2_NPI, SELECT2_BIAS_MMA, SELECT2_SPLIT
from .quantize import QUANT_CONFIG, _sale_quant_kernel
from .select import THR_CONFIG, _sale_select_kernel, _sale_thr_kernel, key_blocks, select_config
from .select2 import _sale_select2_kernel, select2_blocks, select2_config


def shipped_configs():
    """[(name, kernel, signature, constexprs, options)] for the sm_90 compile check (kernels/configs.py format)."""
    out = []
    for dt in ("*fp16", "*bf16"):
        for D in (64, 128):
            c = dict(QUANT_CONFIG)
            br = c.pop("BLOCK_R")
            qsig = dict(x_ptr=dt, mean_ptr="*fp32", other_ptr="*fp32", pack_ptr="*i8", scale_ptr="*fp32",
                        bias_ptr="*fp32", x8_ptr="*i8", S="i32", NH="i32", sx_b="i32", sx_h="i32", sx_s="i32")
            out.append((f"sale_quant_q[{dt},D={D}]", _sale_quant_kernel, qsig,
                        dict(D=D, BLOCK_R=br, NB=1, DIV=4, BIAS_RAW=True, UNPACK=False), c))
            out.append((f"sale_quant_k[{dt},D={D}]", _sale_quant_kernel, qsig,
                        dict(D=D, BLOCK_R=br, NB=4, DIV=1, BIAS_RAW=False, UNPACK=False), c))
            out.append((f"sale_quant_k_unpack[{dt},D={D}]", _sale_quant_kernel, dict(qsig, x8_ptr="*fp8e4nv"),
                        dict(D=D, BLOCK_R=br, NB=4, DIV=1, BIAS_RAW=False, UNPACK=True), c))
            for bm, bn in ((64, 64), (128, 64)):
                ssig = dict(q_ptr=dt, k_ptr=dt, qp_ptr="*i8", qs_ptr="*fp32", qb_ptr="*fp32", kp_ptr="*i8",
                            ks_ptr="*fp32", kb_ptr="*fp32", tau_ptr="*fp32", thr_ptr="*fp32", idx_ptr="*i32", cnt_ptr="*i32",
                            mask_ptr="*i8", S="i32", H="i32", G="i32", sq_b="i32", sq_h="i32", sq_s="i32",
                            sk_b="i32", sk_h="i32", sk_s="i32", qk_scale="fp32", tau_dense="fp32",
                            N_SINK="i32", WINDOW="i32", MWIN="i32")
                for gs, pool in ((1, 1), (4, 1), (4, 8), (4, 16), (1, 16)):
                    pr = max(gs * bm // pool, 16)
                    out.append((f"sale_select[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool}]", _sale_select_kernel, ssig,
                                dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, PR=pr, F8=True,
                                     KB=key_blocks(pr, bn)), select_config(pr)))
                    if gs == 4 and bm == 64:  # v2: the stacked 4-head kernel ships with 128-row blocks only
                        continue
                    qbs = [select2_blocks(gs, bm, pool, None)[0]]
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4) and pool > 1:  # benchmark --quick sweeps QB
                        qbs = sorted({*qbs, 1, 2, 4})
                    for qb in qbs:
                        qb_, rq = select2_blocks(gs, bm, pool, qb)
                        pr2 = qb_ * rq
                        out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_}]",
                                    _sale_select2_kernel, {("kx_ptr" if a == "kp_ptr" else a): ("*fp8e4nv" if a == "kp_ptr" else t) for a, t in ssig.items()},
                                    dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                         KB=key_blocks(pr2, bn), BIAS_MMA=SELECT2_BIAS_MMA, SPLIT=SELECT2_SPLIT),
                                    select2_config(pr2, SELECT2_SPLIT)))
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4):  # benchmark --quick: the exact pass split off
                        for qb_ in qbs:
                            qb_, rq = select2_blocks(gs, bm, pool, qb_)
                            out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_},SPLIT]",
                                        _sale_select2_kernel, out[-1][2],
                                        dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                             KB=key_blocks(qb_ * rq, bn), BIAS_MMA=SELECT2_BIAS_MMA, SPLIT=True),
                                        select2_config(qb_ * rq, True)))
                    if (dt, D, bm, gs) == ("*bf16", 128, 128, 4):  # benchmark --quick: the one-hot MMA bias
                        qb_, rq = select2_blocks(gs, bm, pool, None)
                        out.append((f"sale_select2[{dt},D={D},{bm}x{bn},GS={gs},POOL={pool},QB={qb_},BIAS_MMA]",
                                    _sale_select2_kernel, out[-1][2],
                                    dict(D=D, BLOCK_M=bm, BLOCK_N=bn, GS=gs, POOL=pool, QB=qb_, RQ=rq, F8=True,
                                         KB=key_blocks(qb_ * rq, bn), BIAS_MMA=not SELECT2_BIAS_MMA,
                                         SPLIT=SELECT2_SPLIT), select2_config(qb_ * rq, SELECT2_SPLIT)))
                tsig = dict(q_ptr=dt, k_ptr=dt, qb_ptr="*fp32", tau_ptr="*fp32", thr_ptr="*fp32", S="i32", H="i32",
                            G="i32", sq_b="i32", sq_h="i32", sq_s="i32", sk_b="i32", sk_h="i32", sk_s="i32",
                            qk_scale="fp32", tau_dense="fp32", N_SINK="i32", WINDOW="i32", MWIN="i32")
                out.append((f"sale_thr[{dt},D={D},{bm}x{bn}]", _sale_thr_kernel, tsig,
                            dict(D=D, BLOCK_M=bm, BLOCK_N=bn), dict(THR_CONFIG)))
                asig = dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, o_ptr=dt, idx_ptr="*i32", cnt_ptr="*i32", S="i32",
                            H="i32", G="i32", **{f"s{t}_{a}": "i32" for t in "qkvo" for a in "bhs"},
                            qk_scale="fp32", MWIN="i32")
                for cfg in [ATTN2_CONFIG[D]] + ([dict(num_warps=8, num_stages=2), dict(num_warps=4, num_stages=3)]
                                                if (dt, D, bm) == ("*bf16", 128, 128) else []):
                    out.append((f"sale_attn2[{dt},D={D},{bm}x{bn},w{cfg['num_warps']}s{cfg['num_stages']}]",
                                _sale_attn2_kernel, asig, dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False,
                                                              ND=attn2_tail(bm, bn), NPI=ATTN2_NPI), dict(cfg)))
                    if (dt, D, bm) == ("*bf16", 128, 128):  # benchmark --quick: two blocks per iteration
                        out.append((f"sale_attn2[{dt},D={D},{bm}x{bn},w{cfg['num_warps']}s{cfg['num_stages']},NPI=2]",
                                    _sale_attn2_kernel, asig, dict(D=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False,
                                                                  ND=attn2_tail(bm, bn), NPI=2), dict(cfg)))
    return out
