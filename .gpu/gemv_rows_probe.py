"""Issues 18/20: the batched-decode GEMV (int4/gemv_rows.py: W read once for up to 8 rows) at 2-16 rows, against
bf16 (cuBLAS) and the kernels the dispatch picked before (W4A16 "tc", W4A8 grouped "mma" with its long-K split; gemv4 re-reading W per row), in
one process. Llama-3-8B shapes, asymmetric int4 g64 (both presets' format). CUDA-graph timing over weight copies
larger than L2. Config sweep at 8 rows, the best three then at 2, 4 and 16 rows."""
import json, os, sys, time
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int8 import reference as ref8
from qpass.kernels.int8.w4a8 import w4a8_linear_triton
from qpass.kernels.int4 import reference as ref4
from qpass.kernels.int4.w4a16 import w4a16_linear_triton
from qpass.kernels.int4.gemv import w4a16_gemv4
from qpass.kernels.int4.gemv_rows import w4a16_gemv_rows

T0 = time.time()
# BLOCK_KW = 32 x num_warps (gemv_rows.py: no shared-memory shuffles), no register spills at 8 rows
CFGS = {f"n{bn}k{kw}w{nw}": dict(BLOCK_N=bn, BLOCK_KW=kw, num_warps=nw)
        for bn, kw, nw in ((2, 64, 2), (4, 64, 2), (2, 128, 4), (4, 128, 4), (2, 256, 8), (4, 256, 8))}
print(torch.cuda.get_device_name(), flush=True)
rows, best_cfgs = [], {}
SHAPES = ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336))
for M in (8, 2, 4, 16):
    for N, K in SHAPES:
        if time.time() - T0 > 125:
            break
        ng = K // 64
        ws = torch.rand(N, ng, device="cuda") * 1e-3 + 1e-4
        wz = torch.randint(0, 16, (N, ng), device="cuda").float()
        wq = fmt.pack_int4(torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int8))
        wsb, wzb = ws.bfloat16(), wz.bfloat16()
        bias = torch.randn(N, device="cuda", dtype=torch.bfloat16)
        wqs = [wq] + [wq.clone() for _ in range(max(2, -(-150_000_000 // wq.numel())) - 1)]
        wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        wbs = [wb] + [wb.clone() for _ in range(max(2, -(-150_000_000 // wb.numel() // 2)) - 1)]
        x8 = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
        xs = torch.rand(M, device="cuda") * 1e-2
        xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        r8 = ref8.w4a8_linear_ref(x8, wq, ws, xs, bias, torch.float32, 64, w_zero=wz)
        r16 = ref4.w4a16_linear_ref(xb.float(), wq, wsb.float(), wzb.float(), bias.float(), 64)
        y = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        t = {"bf16": graph_time_us([lambda a=a: xb @ a.t() for a in wbs]),
             "a16_tc": graph_time_us([lambda a=a: w4a16_linear_triton(xb, a, wsb, wzb, bias, 64, kernel="tc")
                                      for a in wqs]),
             "a16_gemv4": graph_time_us([lambda a=a: w4a16_gemv4(xb, a, wsb, wzb, bias, 64, y) for a in wqs]),
             "a8_mma": graph_time_us([lambda a=a: w4a8_linear_triton(x8, a, ws, xs, bias, torch.bfloat16, 64,
                                                                     w_zero=wz, kernel="mma") for a in wqs]),
             "a8_gemv4": graph_time_us([lambda a=a: w4a16_gemv4(x8, a, ws, wz, bias, 64, y, x_scale=xs)
                                        for a in wqs])}
        names = list(CFGS) if M == 8 else best_cfgs.get((N, K), [])
        for name in names:
            c = CFGS[name]
            for fmt_name, call, ref in (
                    ("a16", lambda a, c=c: w4a16_gemv_rows(xb, a, wsb, wzb, bias, 64, y, config=c), r16),
                    ("a8", lambda a, c=c: w4a16_gemv_rows(x8, a, ws, wz, bias, 64, y, config=c, x_scale=xs), r8)):
                try:
                    call(wq)
                    err = ((y.float() - ref).norm() / ref.norm()).item()
                    assert err < 1e-2, err
                    t[f"{fmt_name}_{name}"] = graph_time_us([lambda a=a, call=call: call(a) for a in wqs])
                except Exception as e:  # noqa: BLE001
                    t[f"{fmt_name}_{name}"] = float("nan"); print(name, type(e).__name__, str(e)[:300], flush=True)
        if M == 8:
            score = {n: t.get(f"a16_{n}", 1e9) + t.get(f"a8_{n}", 1e9) for n in CFGS}
            best_cfgs[(N, K)] = sorted(score, key=score.get)[:3]
        rows.append(dict(N=N, K=K, M=M, **t))
        b16 = min((v, k) for k, v in t.items() if k.startswith("a16_n") and v == v)
        b8 = min((v, k) for k, v in t.items() if k.startswith("a8_n") and v == v)
        print(f"M={M:2d} N={N:5d} K={K:5d} bf16 {t['bf16']:6.1f} | W4A16 tc {t['a16_tc']:6.1f} gemv4 {t['a16_gemv4']:6.1f} "
              f"rows {b16[0]:6.1f} ({b16[1]}) | W4A8 mma {t['a8_mma']:6.1f} gemv4 {t['a8_gemv4']:6.1f} rows {b8[0]:6.1f} "
              f"({b8[1]})", flush=True)
        del wqs, wbs
        json.dump(rows, open(os.path.join(os.environ.get("OUT", "."), "gemv_rows_probe.json"), "w"), indent=1)
