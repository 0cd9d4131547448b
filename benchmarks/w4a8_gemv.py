"""W4A8 decode on a GPU: the integer-dot GEMV (kernels/int8/gemv.py) against the fp32 GEMV it replaces, the int8
MMA tile, W4A16's GEMV and bf16 cuBLAS, Llama-3-8B shapes, in one process.

    python benchmarks/w4a8_gemv.py [--sweep 1,8] [--ms 1,2,4,8] [--out DIR]

Weights as w4a8-qsm stores them: int4 g64, fp32 steps and zero points (asymmetric) or none (symmetric, w4a4-qsm).
Timing: benchmarks/cuda_timing.py (each call on its own weight copy, > 256 MB in all, so HBM serves W). Every
output is checked against the pure-torch reference. % HBM: the bytes a call must read (codes, steps, zeros) over
its time, against a device-to-device copy measured here. --sweep: launch configs of the new kernel (row block, warps, programs per SM) at the given M.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cuda_timing import graph_time_us  # noqa: E402  (benchmarks/ is on sys.path: the script's folder)
from gemm import copies_for, measure_hbm, rel_err  # noqa: E402

sys.path.insert(0, str(ROOT))
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4 import gemv as k_gemv4  # noqa: E402
from qpass.kernels.int8 import gemv as k_dp4a, reference as ref8, w4a8 as k_w4a8  # noqa: E402

SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]  # q/k/v fused, o, gate/up fused, down
G = 64


def weights(N, K, asym, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randint(0 if asym else -8, 16 if asym else 8, (N, K), device="cuda", generator=g).to(torch.int8)
    s = torch.rand(N, K // G, device="cuda", generator=g) * 1e-3 + 1e-4
    z = torch.randint(0, 16, (N, K // G), device="cuda", generator=g).float() if asym else None
    return fmt.pack_int4(q), s, z


def sweep_configs(KW):
    """[(config overrides, programs per SM)] of the new kernel against KW words per row."""
    if KW <= 512:
        return [(dict(BLOCK_N=bn, num_warps=nw), sm) for bn in (2, 4, 8, 16) for nw in (2, 4, 8) for sm in (1, 2, 4)]
    return [(dict(BLOCK_N=bn, num_warps=nw), sm) for bn in (1, 2, 4) for nw in (8, 16) for sm in (1, 2)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", default="", help="rows to sweep launch configs at (e.g. 1,8; zero-pointed weights)")
    ap.add_argument("--ms", default="1,2,4,8")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    hbm = measure_hbm()
    gpu = torch.cuda.get_device_name()
    rows = []

    def rec(op, M, N, K, asym, us, nbytes, err, **kw):
        r = dict(op=op, M=M, N=N, K=K, asym=asym, us=round(us, 3), hbm_pct=round(100 * nbytes / hbm / (us * 1e-6), 1),
                 rel_err=err, **kw)
        rows.append(r)
        print("ROW", json.dumps(r), flush=True)

    for N, K in SHAPES:
        for asym in (True, False):
            p, s, z = weights(N, K, asym, N + K)
            nbytes = p.numel() * p.element_size() + s.numel() * 4 + (z.numel() * 4 if asym else 0)
            copies = copies_for(nbytes)
            ws = [(p, s, z)] + [(p.clone(), s.clone(), None if z is None else z.clone()) for _ in range(copies - 1)]
            for M in [int(m) for m in args.ms.split(",")]:
                x = torch.randint(-128, 128, (M, K), device="cuda", dtype=torch.int8)
                xs = torch.rand(M, device="cuda") * 0.1 + 0.01
                ref = ref8.w4a8_linear_ref(x, p, s, xs, None, torch.float32, G, None, w_zero=z)
                y = torch.empty(M, N, dtype=torch.bfloat16, device="cuda")

                def timed(op, fn, **kw):
                    try:
                        out = fn(*ws[0])
                        torch.cuda.synchronize()
                        err = rel_err(out, ref)
                        assert err < 1e-2 and torch.isfinite(out.float()).all(), err
                        rec(op, M, N, K, asym, graph_time_us([lambda w=w: fn(*w) for w in ws]), nbytes, err, **kw)
                    except Exception as ex:  # noqa: BLE001
                        print("FAIL", op, M, N, K, kw, type(ex).__name__, str(ex)[:300], flush=True)

                timed("dp4a", lambda p_, s_, z_: k_dp4a.w4a8_gemv_dp4a(x, p_, s_, z_, None, G, y, x_scale=xs))
                timed("fp32_gemv", lambda p_, s_, z_: (k_gemv4.w4a16_gemv4(x, p_, s_, z_, None, G, y, x_scale=xs), y)[1])
                timed("mma", lambda p_, s_, z_: k_w4a8.w4a8_linear_triton(x, p_, s_, xs, None, torch.bfloat16, G,
                                                                          kernel="mma", w_zero=z_))
                timed("op", lambda p_, s_, z_: k_w4a8.w4a8_linear_triton(x, p_, s_, xs, None, torch.bfloat16, G,
                                                                         w_zero=z_))
                if asym and str(M) in args.sweep.split(","):
                    for cfg, sm in sweep_configs(fmt.as_words(p).shape[1]):
                        timed("dp4a_cfg", lambda p_, s_, z_, cfg=cfg, sm=sm: k_dp4a.w4a8_gemv_dp4a(
                            x, p_, s_, z_, None, G, y, x_scale=xs, config=cfg, per_sm=sm), cfg=dict(cfg, per_sm=sm))
            del ws
            xb = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
            wb = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(N * K * 2))]
            rec("bf16", 1, N, K, asym, graph_time_us([lambda w=w: F.linear(xb, w) for w in wb]), N * K * 2, None)
            del wb
            torch.cuda.empty_cache()

    best = {}
    for r in rows:
        key = (r["op"] if r["op"] != "dp4a_cfg" else "dp4a_best", r["M"], r["N"], r["K"], r["asym"])
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    ops = ["bf16", "fp32_gemv", "dp4a", "dp4a_best", "mma", "op"]
    lines = [f"GPU {gpu}; HBM copy {hbm / 1e12:.2f} TB/s; µs (% of copy bandwidth)",
             "| M | N×K | zeros | " + " | ".join(ops) + " | best cfg |", "|" + "---|" * (len(ops) + 4)]
    for (M, N, K, asym) in sorted({k[1:] for k in best}, key=lambda t: (t[1], t[2], not t[3], t[0])):
        cells = []
        for op in ops:
            r = best.get((op, M if op != "bf16" else 1, N, K, asym))
            cells.append("–" if r is None else f"{r['us']:.1f} ({r['hbm_pct']:.0f}%)")
        cfg = best.get(("dp4a_best", M, N, K, asym), {}).get("cfg", "")
        lines.append(f"| {M} | {N}×{K} | {'asym' if asym else 'sym'} | " + " | ".join(cells) + f" | {cfg} |")
    table = "\n".join(lines)
    res = dict(gpu=gpu, torch=torch.__version__, triton=__import__("triton").__version__, hbm_bytes_per_s=hbm,
               group_size=G, rows=rows, table=table)
    for d in [Path(args.out)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{gpu.replace(' ', '_')}.w4a8_gemv.json").write_text(json.dumps(res, indent=1))
    print(table)


if __name__ == "__main__":
    main()
