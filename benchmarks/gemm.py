"""GEMM benchmark on a GPU: bf16 cuBLAS, tinygemm, torch._int_mm and every qpass kernel, Llama-3-8B shapes.

    python3 benchmarks/gemm.py                 # full table -> benchmarks/results/<gpu>.json (+ $OUT copy)
    python3 benchmarks/gemm.py --sweep         # config sweeps of the decode/prefill kernels first

Timing: each op is captured C times in one CUDA graph, each call on its own weight copy (C copies > 256 MB,
so HBM, not the 50 MB L2, serves the weights); the graph is replayed R times and the median replay / C is
reported.  Every qpass output is checked against its pure-torch reference in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cuda_timing import graph_time_us  # noqa: E402  (benchmarks/: the script's folder is on sys.path)

sys.path.insert(0, str(ROOT))  # the checkout's qpass (importing it loads no torch-heavy modules)
from qpass.kernels import ops as qk  # noqa: E402
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4 import dequant as k_dequant, reference as ref4, w4a16 as k_w4a16  # noqa: E402
from qpass.kernels.int8 import gemm as k_int8, reference as ref8, w4a8 as k_w4a8  # noqa: E402
from qpass.kernels.int4 import gemv as k_gemv4, gemv2 as k_gemv2  # noqa: E402
from qpass.kernels.ternary import gemv as k_tgemv, reference as reft, ternary as k_tern  # noqa: E402
from variants import ternary_variants as v_tern, w4a16_variants as v_w4a16  # noqa: E402  (benchmarks/variants/)

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]
MS = [1, 16, 64, 256, 2048]
ROTATE_BYTES = 256 << 20
PEAK_FP16 = 989e12  # H100 SXM dense datasheet
PEAK_INT8 = 1979e12


def copies_for(nbytes):
    return int(min(48, max(2, math.ceil(ROTATE_BYTES / max(nbytes, 1)))))


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def measure_hbm():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = graph_time_us([lambda: b.copy_(a)], reps=10)
    return 2 * n / (t * 1e-6)


class Case:
    def __init__(self, M, N, K, dev="cuda"):
        self.M, self.N, self.K = M, N, K
        g = torch.Generator(device=dev).manual_seed(M * 7 + N * 3 + K)
        self.x = torch.randn(M, K, device=dev, dtype=torch.bfloat16, generator=g)
        self.w = torch.randn(N, K, device=dev, dtype=torch.bfloat16, generator=g) * 0.02


def run_case(M, N, K, hbm_bw, rows, check=True, which=None):
    c = Case(M, N, K)
    x, w = c.x, c.w
    out = {}

    def rec(name, us, nbytes, flops, peak, err=None, extra=None):
        limit = max(nbytes / hbm_bw, flops / peak)
        r = dict(op=name, M=M, N=N, K=K, us=round(us, 3), roofline_us=round(limit * 1e6, 3),
                 pct_roofline=round(100 * limit * 1e6 / us, 1), tops=round(flops / us * 1e-6, 1))
        if err is not None:
            r["rel_err"] = err
        if extra:
            r.update(extra)
        out[name] = r
        rows.append(r)

    def want(name):
        return which is None or name in which

    flops = 2.0 * M * N * K
    act_bytes = M * K * 2 + M * N * 2
    # ---- bf16 cuBLAS
    if want("bf16"):
        ws = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
        rec("bf16", graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in ws]), N * K * 2 + act_bytes, flops,
            PEAK_FP16)
        del ws
    # ---- int4 weights, g128 symmetric (qpass) / asymmetric uint4 (tinygemm)
    q, s, _ = fmt.quantize_int4(w, 128, symmetric=True)
    p = fmt.pack_int4(q)
    s16 = s.to(torch.bfloat16)
    w4_bytes = p.numel() + s16.numel() * 2
    if want("tinygemm"):
        try:
            u = (q.to(torch.int32) + 8)
            u8 = ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8)
            tp = torch.ops.aten._convert_weight_to_int4pack(u8, 8)
            sz = torch.stack([s.t(), torch.zeros_like(s.t())], dim=-1).to(torch.bfloat16).contiguous()  # w=(u-8)*s+0
            tps = [tp] + [tp.clone() for _ in range(copies_for(w4_bytes) - 1)]
            y = torch.ops.aten._weight_int4pack_mm(x, tp, 128, sz)
            yref = ref4.w4a16_linear_ref(x, p, s16, None, None, 128)
            rec("tinygemm", graph_time_us([lambda t=t: torch.ops.aten._weight_int4pack_mm(x, t, 128, sz)
                                           for t in tps]), w4_bytes + act_bytes, flops, PEAK_FP16,
                err=rel_err(y, yref))
            del tps
        except Exception as e:  # noqa: BLE001
            print("tinygemm failed:", repr(e)[:200])
    if want("w4a16"):
        ps = [p] + [p.clone() for _ in range(copies_for(w4_bytes) - 1)]
        y = qk.w4a16_linear(x, p, s16, None, None, 128)
        err = rel_err(y, ref4.w4a16_linear_ref(x, p, s16, None, None, 128)) if check else None
        rec("qpass_w4a16", graph_time_us([lambda pi=pi: qk.w4a16_linear(x, pi, s16, None, None, 128) for pi in ps]),
            w4_bytes + act_bytes, flops, PEAK_FP16, err=err)
        del ps
    for path in ("tc", "dequant"):  # each prefill path of the op forced, to place DEQUANT_MIN_M by measurement
        if want(f"w4a16_{path}"):
            ps = [p] + [p.clone() for _ in range(copies_for(w4_bytes) - 1)]
            y = k_w4a16.w4a16_linear_triton(x, p, s16, None, None, 128, kernel=path)
            err = rel_err(y, ref4.w4a16_linear_ref(x, p, s16, None, None, 128)) if check else None
            rec(f"qpass_w4a16_{path}", graph_time_us([lambda pi=pi: k_w4a16.w4a16_linear_triton(
                x, pi, s16, None, None, 128, kernel=path) for pi in ps]), w4_bytes + act_bytes, flops, PEAK_FP16,
                err=err)
            del ps
    # ---- ternary, two planes, g128
    if want("ternary"):
        t1, t2, a1, a2 = fmt.quantize_ternary(w, 128)
        P1, P2 = fmt.pack_trits(t1), fmt.pack_trits(t2)
        a1, a2 = a1.to(torch.bfloat16), a2.to(torch.bfloat16)
        tb = 2 * P1.numel() + 4 * a1.numel()
        pls = [(P1, P2)] + [(P1.clone(), P2.clone()) for _ in range(copies_for(tb) - 1)]
        y = qk.ternary_linear(x, P1, P2, a1, a2, None, 128)
        err = rel_err(y, reft.ternary_linear_ref(x, P1, P2, a1, a2, None, 128)) if check else None
        rec("qpass_ternary", graph_time_us([lambda a=a, b=b: qk.ternary_linear(x, a, b, a1, a2, None, 128)
                                            for a, b in pls]), tb + act_bytes, flops, PEAK_FP16, err=err)
        del pls
    # ---- int8 activations
    xi = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
    wsc = torch.rand(N, device="cuda") * 1e-3 + 1e-4
    xsc = torch.rand(M, device="cuda") * 1e-2 + 1e-3
    i8_act = M * K + M * N * 2
    if want("int8") or want("int_mm"):
        wi8 = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8)
        wis = [wi8] + [wi8.clone() for _ in range(copies_for(N * K) - 1)]
        if want("int_mm"):
            try:
                rec("torch_int_mm", graph_time_us([lambda a=a: torch._int_mm(xi, a.t()) for a in wis]),
                    N * K + M * K + M * N * 4, flops, PEAK_INT8)
            except Exception as e:  # noqa: BLE001
                print(f"_int_mm M={M}: {type(e).__name__}")
        if want("int8"):
            y = qk.int8_linear(xi, wi8, wsc, xsc, None, torch.bfloat16)
            err = rel_err(y, ref8.int8_linear_ref(xi, wi8, wsc, xsc, None, torch.bfloat16)) if check else None
            rec("qpass_int8", graph_time_us([lambda a=a: qk.int8_linear(xi, a, wsc, xsc, None, torch.bfloat16)
                                             for a in wis]), N * K + i8_act, flops, PEAK_INT8, err=err)
        del wis
    if want("w4a8"):
        q8 = torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8)
        p8 = fmt.pack_int4(q8)
        p8s = [p8] + [p8.clone() for _ in range(copies_for(p8.numel()) - 1)]
        y = qk.w4a8_linear(xi, p8, wsc, xsc, None, torch.bfloat16)
        err = rel_err(y, ref8.w4a8_linear_ref(xi, p8, wsc, xsc, None, torch.bfloat16)) if check else None
        rec("qpass_w4a8", graph_time_us([lambda a=a: qk.w4a8_linear(xi, a, wsc, xsc, None, torch.bfloat16)
                                         for a in p8s]), p8.numel() + i8_act, flops, PEAK_INT8, err=err)
        del p8s
    # ---- static QSM form: per-(row, group of 64) weight steps inside the K loop, activation step folded (x_scale
    # None), int8 (W4A8) or int4-valued (W4A4) activations: what the w4a8-qsm / w4a4-qsm / w8a8-smooth-g64 sites run
    if want("w4a8_g64") or want("int8_g64"):
        wsg = torch.rand(N, (K + 63) // 64, device="cuda") * 1e-3 + 1e-4
        for name, codes, op, refop in (
                ("w4a8_g64", lambda: fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8)),
                 qk.w4a8_linear, ref8.w4a8_linear_ref),
                ("int8_g64", lambda: torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8),
                 qk.int8_linear, ref8.int8_linear_ref)):
            if not want(name):
                continue
            wq = codes()
            wqs = [wq] + [wq.clone() for _ in range(copies_for(wq.numel()) - 1)]
            y = op(xi, wq, wsg, None, None, torch.bfloat16, 64)
            err = rel_err(y, refop(xi, wq, wsg, None, None, torch.bfloat16, 64)) if check else None
            rec(f"qpass_{name}", graph_time_us([lambda a=a: op(xi, a, wsg, None, None, torch.bfloat16, 64)
                                                for a in wqs]), wq.numel() + wsg.numel() * 4 + i8_act, flops,
                PEAK_INT8, err=err)
            del wqs
    if want("w4a8_g64_int"):  # the same with integer group steps (weights.integer_group_steps): row step x u <= 16
        row = torch.rand(N, device="cuda") * 1e-4 + 1e-5
        wsi = row[:, None] * torch.randint(1, 17, (N, (K + 63) // 64), device="cuda").float()
        wq = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
        wqs = [wq] + [wq.clone() for _ in range(copies_for(wq.numel()) - 1)]
        y = qk.w4a8_linear(xi, wq, wsi, None, None, torch.bfloat16, 64, None, None, row)
        err = rel_err(y, ref8.w4a8_linear_ref(xi, wq, wsi, None, None, torch.bfloat16, 64)) if check else None
        rec("qpass_w4a8_g64_int", graph_time_us([lambda a=a: qk.w4a8_linear(xi, a, wsi, None, None, torch.bfloat16,
                                                                             64, None, None, row) for a in wqs]),
            wq.numel() + wsi.numel() * 4 + i8_act, flops, PEAK_INT8, err=err)
        del wqs
    if want("qact_static"):  # QSM's quantizer: step 1, per-column zero points, the sorted-channel gather
        gidx = torch.randperm(K, device="cuda").to(torch.int32)
        zq = torch.randint(-8, 8, (K,), device="cuda").float()
        one = torch.ones(1, device="cuda")
        yq, _ = qk.quantize_activation_int8(x, one, 7, zq, gidx)
        rq, _ = ref8.quantize_activation_int8_ref(x, one, 7, zq, gidx)
        rec("qpass_quant_act_static", graph_time_us([lambda: qk.quantize_activation_int8(x, one, 7, zq, gidx)]),
            M * K * 3 + K * 8, 0.0, PEAK_INT8, err=(yq.int() - rq.int()).abs().max().item())
    if want("qact"):
        yq, ys = qk.quantize_activation_int8(x, None, 127)
        rq, rs = ref8.quantize_activation_int8_ref(x, None, 127)
        err = (yq.int() - rq.int()).abs().max().item() + (ys - rs).abs().max().item()
        rec("qpass_quant_act", graph_time_us([lambda: qk.quantize_activation_int8(x, None, 127)]),
            M * K * 3 + M * 4, 0.0, PEAK_INT8, err=err)
    return out


def sweep(hbm_bw, apply=True):
    """Config sweeps of the M = 1 GEMV variants of benchmarks/variants/ ("gemv", "gemv3"); with apply, the fastest
    (summed over the two shapes) is printed as BEST (to copy into the variant's source)."""
    res = []
    for N, K in [(14336, 4096), (4096, 4096)]:
        c = Case(1, N, K)
        q, s, _ = fmt.quantize_int4(c.w, 128)
        p = fmt.pack_int4(q)
        s16 = s.to(torch.bfloat16)
        ps = [p] + [p.clone() for _ in range(copies_for(p.numel()) - 1)]
        t1, t2, a1, a2 = fmt.quantize_ternary(c.w, 128)
        P1, P2 = fmt.pack_trits(t1), fmt.pack_trits(t2)
        a1, a2 = a1.to(torch.bfloat16), a2.to(torch.bfloat16)
        pls = [(P1, P2)] + [(P1.clone(), P2.clone()) for _ in range(copies_for(2 * P1.numel()) - 1)]
        yr = ref4.w4a16_linear_ref(c.x, p, s16, None, None, 128)
        yt = reft.ternary_linear_ref(c.x, P1, P2, a1, a2, None, 128)
        for kind in ("gemv", "gemv3"):
            for bn in (8, 16, 32):
                for bkw in (32, 64, 128):
                    for nw in (4, 8):
                        cfg = dict(BLOCK_N=bn, BLOCK_KW=bkw, num_warps=nw, num_stages=1)
                        if bkw >= 32:
                            try:
                                y = v_w4a16.w4a16_variant(c.x, p, s16, None, None, 128, config=cfg, kernel=kind)
                                assert rel_err(y, yr) < 1e-2
                                us = graph_time_us([lambda pi=pi: v_w4a16.w4a16_variant(
                                    c.x, pi, s16, None, None, 128, config=cfg, kernel=kind) for pi in ps], reps=10)
                                res.append(dict(kernel="w4a16", kind=kind, N=N, K=K, cfg=cfg, us=us))
                            except Exception as e:  # noqa: BLE001
                                print("w4a16", kind, cfg, type(e).__name__)
                        if bkw <= 64:
                            try:
                                y = v_tern.ternary_variant(c.x, P1, P2, a1, a2, None, 128, config=cfg,
                                                           kernel=kind)
                                assert rel_err(y, yt) < 1e-2
                                us = graph_time_us([lambda a=a, b=b: v_tern.ternary_variant(
                                    c.x, a, b, a1, a2, None, 128, config=cfg, kernel=kind) for a, b in pls], reps=10)
                                res.append(dict(kernel="ternary", kind=kind, N=N, K=K, cfg=cfg, us=us))
                            except Exception as e:  # noqa: BLE001
                                print("ternary", kind, cfg, type(e).__name__)
        del ps, pls
    for op in ("w4a16", "ternary"):
        tot = {}
        for r in res:
            if r["kernel"] == op:
                key = (r["kind"], tuple(sorted(r["cfg"].items())))
                tot.setdefault(key, []).append(r["us"])
        tot = {k: sum(v) for k, v in tot.items() if len(v) == 2}
        for k, v in sorted(tot.items(), key=lambda kv: kv[1])[:5]:
            print("SWEEP", op, k[0], dict(k[1]), f"sum {v:.2f} us")
        if apply and tot:  # to copy into benchmarks/variants/ (the dispatch's M = 1 kernels are gemv4 / gemv2)
            kind, cfg = min(tot, key=tot.get)
            print("BEST", op, kind, dict(cfg))
    return res


GROUPED_SWEEP = {  # M -> (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) candidates, group 64
    16: [(16, 128, 64, 8, 4, 4), (16, 64, 64, 8, 4, 4), (16, 32, 64, 8, 4, 4), (16, 64, 64, 8, 2, 6),
         (32, 64, 64, 8, 4, 4), (16, 32, 64, 8, 2, 6)],
    4096: [(256, 128, 64, 8, 8, 3), (128, 128, 64, 8, 4, 4), (128, 128, 64, 8, 8, 4), (128, 256, 64, 8, 8, 3),
           (64, 128, 64, 8, 4, 4), (128, 64, 64, 8, 4, 4), (128, 128, 64, 8, 4, 3), (64, 256, 64, 8, 4, 4)],
}


def sweep_grouped():
    """Tile configs of the per-group-step int GEMMs (w4a8 / int8 with g64 steps: the static QSM form)."""
    res = []
    for M, cands in GROUPED_SWEEP.items():
        for N, K in SHAPES:
            xi = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
            wsg = torch.rand(N, K // 64, device="cuda") * 1e-3 + 1e-4
            p8 = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
            wi8 = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8)
            for bm, bn, bk, gm, nw, st in cands:
                cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=nw, num_stages=st)
                for name, w, w4, unpack in (("w4a8", p8, True, 0), ("w4a8", p8, True, 1), ("int8", wi8, False, 0)):
                    if unpack and M > 16:  # the re-read unpack only matters where W dominates
                        continue
                    c = dict(cfg, UNPACK=unpack)
                    try:
                        fn = lambda: k_int8.int_mm(xi, w, wsg, None, None, torch.bfloat16, w4, c, 64)  # noqa: E731
                        ref = (ref8.w4a8_linear_ref if w4 else ref8.int8_linear_ref)(xi, w, wsg, None, None,
                                                                                    torch.bfloat16, 64)
                        assert rel_err(fn(), ref) < 1e-2
                        us = graph_time_us([fn], reps=10)
                        res.append(dict(kernel=f"{name}_g64", M=M, N=N, K=K, cfg=c, us=us))
                        print(f"GROUPED {name} M={M} {N}x{K} {us:.1f} us {c}", flush=True)
                    except Exception as e:  # noqa: BLE001
                        print("GROUPED failed", name, M, N, K, c, type(e).__name__, str(e)[:120], flush=True)
    return res


def sweep_prefill():
    res = []
    M, N, K = 2048, 14336, 4096
    c = Case(M, N, K)
    q, s, _ = fmt.quantize_int4(c.w, 128)
    p = fmt.pack_int4(q)
    s16 = s.to(torch.bfloat16)
    yr = ref4.w4a16_linear_ref(c.x, p, s16, None, None, 128)
    xi = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
    wi8 = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8)
    p8 = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
    wsc = torch.rand(N, device="cuda") + 0.5
    for bm, bn, bk, nw, st in [(128, 128, 64, 8, 3), (128, 128, 128, 8, 3), (128, 256, 64, 8, 3), (64, 256, 64, 4, 4),
                               (128, 128, 64, 4, 4), (256, 128, 64, 8, 3), (128, 64, 128, 4, 4)]:
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=st)
        try:
            y = k_w4a16.w4a16_linear_triton(c.x, p, s16, None, None, 128, config=cfg, kernel="tc")
            assert rel_err(y, yr) < 1e-2
            us = graph_time_us([lambda: k_w4a16.w4a16_linear_triton(c.x, p, s16, None, None, 128, config=cfg,
                                                                     kernel="tc")], reps=10)
            res.append(dict(kernel="w4a16_tc_m2048", cfg=cfg, us=us))
        except Exception as e:  # noqa: BLE001
            print("w4a16 tc prefill", cfg, type(e).__name__, str(e)[:100])
    for bm, bn, bk, nw, st in [(128, 256, 128, 8, 3), (128, 256, 128, 8, 4), (256, 128, 128, 8, 3),
                               (128, 128, 128, 4, 4), (128, 256, 64, 8, 4), (128, 128, 256, 8, 3)]:
        for w_int4, wt in ((False, wi8), (True, p8)):
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=nw, num_stages=st)
            try:
                fn = k_w4a8.w4a8_linear_triton if w_int4 else k_int8.int8_linear_triton
                y = fn(xi, wt, wsc, None, None, torch.bfloat16, config=cfg)
                r = (ref8.w4a8_linear_ref if w_int4 else ref8.int8_linear_ref)(xi, wt, wsc, None, None, torch.bfloat16)
                assert rel_err(y, r) < 1e-2
                us = graph_time_us([lambda: fn(xi, wt, wsc, None, None, torch.bfloat16, config=cfg)], reps=10)
                res.append(dict(kernel="w4a8_m2048" if w_int4 else "int8_m2048", cfg=cfg, us=us))
            except Exception as e:  # noqa: BLE001
                print("int8 prefill", w_int4, cfg, type(e).__name__, str(e)[:100])
    for r in sorted(res, key=lambda r: (r["kernel"], r["us"])):
        print("PREFILL", r["kernel"], f"{r['us']:.1f} us", r["cfg"])
    return res


def sweep2():
    """Config sweeps of the gemv2 decode kernels (W4A16, ternary), the fused prefill kernels (W4A16 mm,
    W4A8 in-register unpack) and the int8 GEMM tiles; prints one line per config, returns the rows."""
    res = []

    def t(tag, fn, ref_y, fns, tol=1e-2, **kw):
        try:
            e = rel_err(fn(), ref_y)
            assert e < tol, e
            us = graph_time_us(fns, reps=10)
            res.append(dict(kernel=tag, us=us, err=e, **kw))
            print("SW2", tag, f"{us:.1f} us", kw, flush=True)
        except Exception as ex:  # noqa: BLE001
            print("SW2 FAIL", tag, kw, type(ex).__name__, str(ex)[:150], flush=True)

    for N, K in [(14336, 4096), (4096, 4096), (4096, 14336)]:
        c = Case(1, N, K)
        q, s, _ = fmt.quantize_int4(c.w, 128)
        p = fmt.pack_int4(q)
        s16 = s.to(torch.bfloat16)
        ps = [p] + [p.clone() for _ in range(copies_for(p.numel()) - 1)]
        yr = ref4.w4a16_linear_ref(c.x, p, s16, None, None, 128)
        for bn, nw, mult in [(2, 4, 128), (4, 4, 128), (8, 4, 128), (16, 4, 128), (4, 8, 128), (8, 8, 128),
                             (4, 2, 128), (8, 2, 128), (16, 2, 128), (8, 4, 64), (16, 1, 128), (8, 1, 128)]:
            cfg = dict(BLOCK_N=bn, BLOCK_KW=mult * nw, num_warps=nw, num_stages=1)
            t("w4a16_gemv2", lambda: k_w4a16.w4a16_linear_triton(c.x, p, s16, None, None, 128, config=cfg,
                                                                  kernel="gemv2"), yr,
              [lambda pi=pi: k_w4a16.w4a16_linear_triton(c.x, pi, s16, None, None, 128, config=cfg, kernel="gemv2")
               for pi in ps], N=N, K=K, cfg=cfg)
        t1, t2, a1, a2 = fmt.quantize_ternary(c.w, 128)
        P1, P2 = fmt.pack_trits(t1), fmt.pack_trits(t2)
        a1, a2 = a1.to(torch.bfloat16), a2.to(torch.bfloat16)
        pls = [(P1, P2)] + [(P1.clone(), P2.clone()) for _ in range(copies_for(2 * P1.numel()) - 1)]
        yt = reft.ternary_linear_ref(c.x, P1, P2, a1, a2, None, 128)
        for bn, nw in [(4, 2), (8, 2), (16, 2), (4, 4), (8, 4), (8, 1), (16, 1), (2, 4)]:
            cfg = dict(BLOCK_N=bn, BLOCK_KW=128 * nw, num_warps=nw, num_stages=1)
            t("ternary_gemv2", lambda: k_tern.ternary_linear_triton(c.x, P1, P2, a1, a2, None, 128, config=cfg,
                                                                     kernel="gemv2"), yt,
              [lambda a=a, b=b: k_tern.ternary_linear_triton(c.x, a, b, a1, a2, None, 128, config=cfg,
                                                             kernel="gemv2") for a, b in pls], N=N, K=K, cfg=cfg)
        del ps, pls
        torch.cuda.empty_cache()
    M, N, K = 2048, 14336, 4096
    c = Case(M, N, K)
    q, s, _ = fmt.quantize_int4(c.w, 128)
    p = fmt.pack_int4(q)
    s16 = s.to(torch.bfloat16)
    yr = ref4.w4a16_linear_ref(c.x, p, s16, None, None, 128)
    t("bf16_m2048", lambda: F.linear(c.x, c.w), c.x.float() @ c.w.float().t(), [lambda: F.linear(c.x, c.w)])
    t("w4a16_dequant_m2048", lambda: k_w4a16.w4a16_linear_triton(c.x, p, s16, None, None, 128, kernel="dequant"),
      yr, [lambda: k_w4a16.w4a16_linear_triton(c.x, p, s16, None, None, 128, kernel="dequant")])
    t("int4_dequant_only", lambda: k_dequant.dequantize_int4_triton(p, s16, None, 128, K, torch.bfloat16).float(),
      fmt.dequantize_int4(q, s, None, 128), [lambda: k_dequant.dequantize_int4_triton(p, s16, None, 128, K, torch.bfloat16)])
    for bm, bn, bk, nw, st, up in [(128, 256, 64, 8, 3, 0), (128, 256, 64, 8, 3, 1), (128, 128, 64, 8, 3, 0),
                                   (128, 128, 64, 8, 4, 1), (256, 128, 64, 8, 3, 0), (256, 128, 64, 8, 3, 1),
                                   (128, 256, 32, 8, 4, 0), (128, 128, 64, 4, 4, 0), (128, 128, 128, 8, 3, 0),
                                   (64, 256, 64, 4, 4, 0)]:
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, UNPACK=up, num_warps=nw, num_stages=st)
        t("w4a16_mm_m2048", lambda: v_w4a16.w4a16_variant(c.x, p, s16, None, None, 128, config=cfg, kernel="mm"),
          yr, [lambda: v_w4a16.w4a16_variant(c.x, p, s16, None, None, 128, config=cfg, kernel="mm")], cfg=cfg)
    xi = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
    wi8 = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8)
    p8 = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
    wsc = torch.rand(N, device="cuda") + 0.5
    r8 = ref8.w4a8_linear_ref(xi, p8, wsc, None, None, torch.bfloat16)
    ri = ref8.int8_linear_ref(xi, wi8, wsc, None, None, torch.bfloat16)
    for bm, bn, bk, nw, st in [(128, 256, 128, 8, 3), (256, 128, 128, 8, 3), (128, 256, 64, 8, 4),
                               (128, 128, 128, 8, 4), (128, 256, 128, 8, 4), (256, 128, 64, 8, 4)]:
        for up in (0, 1):
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, UNPACK=up, num_warps=nw, num_stages=st)
            t("w4a8_fused_m2048", lambda: k_w4a8.w4a8_linear_triton(xi, p8, wsc, None, None, torch.bfloat16, config=cfg),
              r8, [lambda: k_w4a8.w4a8_linear_triton(xi, p8, wsc, None, None, torch.bfloat16, config=cfg)], cfg=cfg)
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=nw, num_stages=st)
        t("int8_m2048", lambda: k_int8.int8_linear_triton(xi, wi8, wsc, None, None, torch.bfloat16, config=cfg), ri,
          [lambda: k_int8.int8_linear_triton(xi, wi8, wsc, None, None, torch.bfloat16, config=cfg)], cfg=cfg)
    del xi, wi8, p8, c
    torch.cuda.empty_cache()
    S = 8192
    xi = torch.randint(-127, 128, (S, S), device="cuda", dtype=torch.int8)
    wi8 = torch.randint(-127, 128, (S, S), device="cuda", dtype=torch.int8)
    wsc = torch.rand(S, device="cuda") + 0.5
    ri = ref8.int8_linear_ref(xi[:256], wi8, wsc, None, None, torch.bfloat16)
    for bm, bn, bk, nw, st, gm in [(256, 128, 128, 8, 3, 8), (128, 256, 128, 8, 3, 8), (128, 256, 128, 8, 4, 8),
                                   (256, 128, 128, 8, 4, 8), (128, 256, 64, 8, 4, 8), (256, 128, 128, 8, 3, 16),
                                   (128, 128, 128, 4, 4, 8), (256, 256, 64, 8, 3, 8)]:
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=nw, num_stages=st)
        t("int8_8192", lambda: k_int8.int8_linear_triton(xi, wi8, wsc, None, None, torch.bfloat16, config=cfg)[:256],
          ri, [lambda: k_int8.int8_linear_triton(xi, wi8, wsc, None, None, torch.bfloat16, config=cfg)], cfg=cfg)
    for r in sorted(res, key=lambda r: (r["kernel"], r.get("N", 0), r.get("K", 0), r["us"])):
        print("SW2SORT", r["kernel"], r.get("N", ""), r.get("K", ""), f"{r['us']:.1f}", r.get("cfg", ""))
    return res


GEMV_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]


def gemv_bench(hbm_bw, out_dir, ms=(1, 2, 4, 8, 16), shapes=GEMV_SHAPES, scale_dtype=torch.bfloat16):
    """Decode (M <= 16) W4A16: bf16 cuBLAS, tinygemm, the previous kernels (gemv2 / tc) and gemv4 configs,
    side by side in this process; every qpass output checked against the reference (fresh data per case).
    `scale_dtype`: of the group scales handed to the qpass kernels (the lowering stores fp32)."""
    from qpass.kernels.int4 import gemv as k_gemv
    rows = []

    def rec(tag, M, N, K, us, nbytes, err=None, **kw):
        r = dict(op=tag, M=M, N=N, K=K, us=round(us, 3), hbm_pct=round(100 * nbytes / hbm_bw / (us * 1e-6), 1),
                 rel_err=err, **kw)
        rows.append(r)
        print("GEMV", tag, M, N, K, f"{us:.2f} us", f"{r['hbm_pct']}%", "" if err is None else f"err {err:.1e}",
              kw.get("cfg", ""), flush=True)

    for N, K in shapes:
        for M in ms:
            c = Case(M, N, K)
            x, w = c.x, c.w
            q, s, _ = fmt.quantize_int4(w, 128, symmetric=True)
            p = fmt.pack_int4(q)
            s16 = s.to(scale_dtype)
            wb = p.numel() + s16.numel() * s16.element_size() + M * K * 2 + M * N * 2
            ps = [p] + [p.clone() for _ in range(copies_for(p.numel()) - 1)]
            yr = ref4.w4a16_linear_ref(x, p, s16, None, None, 128)
            ws = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
            rec("bf16", M, N, K, graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in ws]), N * K * 2)
            del ws
            u = (q.to(torch.int32) + 8)
            tp = torch.ops.aten._convert_weight_to_int4pack(((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8), 8)
            sz = torch.stack([s.t(), torch.zeros_like(s.t())], dim=-1).to(torch.bfloat16).contiguous()
            tps = [tp] + [tp.clone() for _ in range(len(ps) - 1)]
            e = rel_err(torch.ops.aten._weight_int4pack_mm(x, tp, 128, sz), yr)
            rec("tinygemm", M, N, K, graph_time_us([lambda t=t: torch.ops.aten._weight_int4pack_mm(x, t, 128, sz)
                                                    for t in tps]), wb, e)
            del tps

            def one(tag, fn, **kw):
                try:
                    y = fn(p)
                    torch.cuda.synchronize()
                    e = rel_err(y, yr)
                    assert e < 1e-2 and torch.isfinite(y).all(), e
                    rec(tag, M, N, K, graph_time_us([lambda pi=pi: fn(pi) for pi in ps]), wb, e, **kw)
                except Exception as ex:  # noqa: BLE001
                    print("GEMV FAIL", tag, M, N, K, kw, type(ex).__name__, str(ex)[:200], flush=True)

            old = "gemv2" if M == 1 else "tc"
            one(f"old_{old}", lambda pi: k_w4a16.w4a16_linear_triton(x, pi, s16, None, None, 128, kernel=old))
            KW = p.shape[1] // 4
            if M == 1 and KW <= 512:
                variants = [(4, 2, 4), (4, 2, 8), (4, 3, 8), (4, 4, 8), (8, 2, 8), (8, 1, 8), (8, 2, 16), (2, 2, 8),
                            (2, 4, 4), (16, 1, 16)]
            elif M == 1:
                variants = [(2, 1, 16), (2, 2, 16), (4, 1, 32), (2, 1, 32), (4, 2, 32)]
            else:
                variants = [(2, 4, None), (4, 2, None)]
            for bn, sm, nw in variants:
                cfg, _ = k_gemv.gemv4_config(N, KW, block_n=bn, num_warps=nw)
                y0 = torch.empty(M, N, dtype=x.dtype, device="cuda")
                try:
                    kern = k_gemv.w4a16_gemv4(x, p, s16, None, None, 128, y0, config=cfg, per_sm=sm)
                except Exception as ex:  # noqa: BLE001
                    print("GEMV FAIL compile", cfg, type(ex).__name__, str(ex)[:200], flush=True)
                    continue
                one("gemv4", lambda pi: (k_gemv.w4a16_gemv4(x, pi, s16, None, None, 128, y0, config=cfg, per_sm=sm),
                                         y0)[1],
                    cfg=dict(cfg, per_sm=sm, regs=getattr(kern, "n_regs", None), spills=getattr(kern, "n_spills", None)))

            one("op_w4a16", lambda pi: qk.w4a16_linear(x, pi, s16, None, None, 128))
            del ps
            torch.cuda.empty_cache()
    best = {}
    for r in rows:
        key = (r["M"], r["N"], r["K"], r["op"])
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    lines = ["| M | N×K | bf16 | tinygemm | old | gemv4 best | op | best cfg | vs tinygemm | % HBM |", "|" + "---|" * 10]
    for (M, N, K) in sorted({k[:3] for k in best}, key=lambda t: (t[1], t[2], t[0])):
        g = lambda op: best.get((M, N, K, op), {}).get("us", float("nan"))  # noqa: E731
        old = min(g("old_gemv2"), g("old_tc")) if M == 1 else g("old_tc")
        b4 = best.get((M, N, K, "gemv4"), {})
        lines.append(f"| {M} | {N}×{K} | {g('bf16'):.1f} | {g('tinygemm'):.1f} | {old:.1f} | {g('gemv4'):.1f} | "
                     f"{g('op_w4a16'):.1f} | {b4.get('cfg', '')} | {g('tinygemm') / g('gemv4'):.2f}x | "
                     f"{b4.get('hbm_pct', '')} |")
    table = "\n".join(lines)
    name = torch.cuda.get_device_name().replace(" ", "_").replace("/", "_")
    res = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=__import__("triton").__version__,
               hbm_bytes_per_s=hbm_bw, rows=rows, table=table)
    for d in [Path(out_dir)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        d.mkdir(parents=True, exist_ok=True)
        tag = "" if scale_dtype == torch.bfloat16 else f".scales_{str(scale_dtype).split('.')[-1]}"
        (d / f"{name}.gemv{tag}.json").write_text(json.dumps(res, indent=1))
    print(table)
    return rows


def fmt_table(rows, gpu, hbm_bw):
    lines = [f"GPU: {gpu}; measured HBM copy bandwidth {hbm_bw / 1e12:.2f} TB/s; torch {torch.__version__}, "
             f"triton {__import__('triton').__version__}", "",
             "| op | M | N×K | µs | vs bf16 | vs best torch | TOP/s | % roofline | rel err |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["M"], r["N"], r["K"]), {})[r["op"]] = r
    for (M, N, K), d in by.items():
        bf = d.get("bf16", {}).get("us")
        for name, r in d.items():
            if name.startswith("qpass_int8") or name.startswith("qpass_w4a8"):
                base = [d[b]["us"] for b in ("bf16", "torch_int_mm") if b in d]
            elif name.startswith("qpass"):
                base = [d[b]["us"] for b in ("bf16", "tinygemm") if b in d]
            else:
                base = []
            if name.startswith("qpass_quant_act"):
                bf, base = None, []
            vs_bf = f"{bf / r['us']:.2f}x" if bf else "–"
            vs_best = f"{min(base) / r['us']:.2f}x" if base and name.startswith("qpass") else "–"
            err = r.get("rel_err")
            lines.append(f"| {name} | {M} | {N}×{K} | {r['us']:.1f} | {vs_bf} | {vs_best} | {r['tops']} | "
                         f"{r['pct_roofline']} | {'' if err is None else f'{err:.1e}'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true")
    ap.add_argument("--sweep-prefill", action="store_true")
    ap.add_argument("--sweep2", action="store_true", help="gemv2 / fused prefill / int8 tile sweeps only")
    ap.add_argument("--sweep-grouped", action="store_true", help="tile sweep of the per-group-step int GEMMs only")
    ap.add_argument("--gemv", action="store_true", help="decode W4A16 (M <= 16) comparison only")
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--gemv-shapes", default=None, help="--gemv: NxK,... (default: the three Llama-3-8B shapes)")
    ap.add_argument("--scale-dtypes", default="bfloat16", help="--gemv: group-scale dtypes to run, e.g. bfloat16,float32")
    ap.add_argument("--shapes", default="all")
    ap.add_argument("--ops", default=None, help="only these ops of the table, e.g. bf16,int_mm,w4a8,w4a8_g64,qact_static")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    hbm = measure_hbm()
    print(f"{gpu}: HBM copy {hbm / 1e12:.2f} TB/s", flush=True)
    result = dict(gpu=gpu, torch=torch.__version__, triton=__import__("triton").__version__, hbm_bytes_per_s=hbm)
    if args.sweep or args.sweep_only:
        result["sweep_decode"] = sweep(hbm)
    if args.sweep_prefill:
        result["sweep_prefill"] = sweep_prefill()
    if args.gemv:
        shapes = ([tuple(map(int, x.split("x"))) for x in args.gemv_shapes.split(",")] if args.gemv_shapes
                  else GEMV_SHAPES)
        for dt in args.scale_dtypes.split(","):
            gemv_bench(hbm, args.out, ms=[int(m) for m in args.ms.split(",")] if args.ms != ",".join(map(str, MS))
                       else (1, 2, 4, 8, 16), shapes=shapes, scale_dtype=getattr(torch, dt))
        return
    for flag, sweep_fn in (("sweep_grouped", sweep_grouped), ("sweep2", sweep2)):
        if getattr(args, flag):
            result[flag] = sweep_fn()
            name = gpu.replace(" ", "_").replace("/", "_")
            for d in [Path(args.out)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{name}.{flag}.json").write_text(json.dumps(result, indent=1))
            return
    rows = []
    if not args.sweep_only:
        ms = [int(m) for m in args.ms.split(",")]
        shapes = SHAPES if args.shapes == "all" else [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
        for N, K in shapes:
            for M in ms:
                run_case(M, N, K, hbm, rows, which=set(args.ops.split(",")) if args.ops else None)
                save(result, rows, gpu, hbm, args.out)
                torch.cuda.empty_cache()
                print(f"done M={M} {N}x{K}: " + ", ".join(f"{r['op']} {r['us']:.1f}" for r in rows
                                                          if (r['M'], r['N'], r['K']) == (M, N, K)), flush=True)
        # the square int8 case
        run_case(8192, 8192, 8192, hbm, rows, which={"bf16", "int8", "int_mm", "w4a8", "w4a8_g64", "int8_g64",
                                                  "w4a8_g64_int"})
    save(result, rows, gpu, hbm, args.out)
    print(fmt_table(rows, gpu, hbm))


def save(result, rows, gpu, hbm, out):
    result["rows"] = rows
    result["dispatch"] = dict(w4a16_gemv=("gemv4", k_gemv4.GEMV4_TABLE, "gemv2", k_gemv2.GEMV2_CONFIG),
                              ternary_gemv=("gemv2", k_tgemv.GEMV2_CONFIG))
    name = gpu.replace(" ", "_").replace("/", "_")
    for d in [Path(out)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.json").write_text(json.dumps(result, indent=1))
        (d / f"{name}.md").write_text(fmt_table(rows, gpu, hbm) + "\n")


if __name__ == "__main__":
    main()
