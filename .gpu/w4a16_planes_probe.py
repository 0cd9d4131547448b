"""Issue 20 prompt GEMM: the nibble-plane W4A16 tile (.gpu/w4a16_planes_kernel.py: weight as wgmma's register
operand straight from the loaded words, no shared-memory round trip of the dequantized tile) against the shipped
W4A16 dispatch and cuBLAS bf16, 16-256 rows, Llama-3-8B shapes, CUDA-graph timing over rotating weight copies."""
import json, os, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / ".gpu")); sys.path.insert(0, str(ROOT / "benchmarks"))
from qpass.kernels import formats as fmt
from qpass.kernels.int4 import reference as ref4, w4a16 as k_w4a16
from cuda_timing import graph_time_us
from w4a16_planes_kernel import w4a16_planes, permute_x

SHAPES = [tuple(map(int, s.split("x"))) for s in os.environ.get("SHAPES", "4096x4096,14336x4096,4096x14336,6144x4096").split(",")]
MS = [int(m) for m in os.environ.get("MS", "16,32,64,128,256").split(",")]
ROT = 256 << 20


def configs(M):
    bm = min(128, max(16, M))
    splits = {16: (4, 8), 32: (4, 8), 64: (2, 4), 128: (1, 2), 256: (1, 2)}[M]
    out = []
    for bn in (64, 128):
        for sk in splits:
            for var in (dict(), dict(SCALE_W=True), dict(SHIPPED_TC_PLANES=True)):
                out.append(dict(BLOCK_M=bm, BLOCK_N=bn, SPLIT_K=sk, num_warps=8 if bn == 128 and bm >= 64 else 4,
                                num_stages=3, **var))
    return out


def main():
    gpu = torch.cuda.get_device_name()
    print(gpu, torch.__version__, flush=True)
    rows = []
    t0 = time.time()
    for N, K in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(N + K)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
        q, s, _ = fmt.quantize_int4(w, 128, symmetric=True)
        p = fmt.pack_int4(q)
        s16 = s.to(torch.bfloat16)
        n = max(2, min(48, -(-ROT // (N * K * 2))))
        ws = [w] + [w.clone() for _ in range(n - 1)]
        n4 = max(2, min(48, -(-ROT // (N * K // 2))))
        ps = [(p, s16)] + [(p.clone(), s16.clone()) for _ in range(n4 - 1)]
        for M in MS:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            yr = ref4.w4a16_linear_ref(x, p, s16, None, None, 128).float()
            bf = graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in ws])
            sh = graph_time_us([lambda pp=pp, ss=ss: k_w4a16.w4a16_linear_triton(x, pp, ss, None, None, 128)
                                for pp, ss in ps])
            xp = permute_x(x)
            perm = graph_time_us([lambda: permute_x(x)] * 8)
            best = None
            for cfg in configs(M):
                if cfg.get("SHIPPED_TC_PLANES"):  # the product's path: int4/tc.py with PLANES (x split in registers)
                    c = {k: v for k, v in cfg.items() if k not in ("SHIPPED_TC_PLANES", "SCALE_W")}
                    c.update(BLOCK_K=128, PLANES=True)
                    run = lambda pp, ss, c=c: k_w4a16.w4a16_linear_triton(x, pp, ss, None, None, 128, config=c,  # noqa
                                                                          kernel="tc")
                else:
                    run = lambda pp, ss, cfg=cfg: w4a16_planes(x, fmt.as_words(pp), ss, None, None, 128, cfg,  # noqa
                                                               xp=xp)
                try:
                    y = run(p, s16).float()
                    err = ((y - yr).norm() / yr.norm()).item()
                    assert err < 1e-2, f"rel err {err:.2e}"
                    us = graph_time_us([lambda pp=pp, ss=ss, run=run: run(pp, ss) for pp, ss in ps])
                    r = dict(M=M, N=N, K=K, cfg=cfg, us=round(us, 2), err=err)
                    if best is None or us < best["us"]:
                        best = r
                except Exception as e:  # noqa: BLE001
                    r = dict(M=M, N=N, K=K, cfg=cfg, error=f"{type(e).__name__}: {str(e)[:200]}")
                rows.append(r)
            rows.append(dict(M=M, N=N, K=K, bf16=round(bf, 2), shipped=round(sh, 2), permute=round(perm, 2)))
            b = best["us"] if best else float("nan")
            bx = min((r["us"] for r in rows if r.get("M") == M and r.get("N") == N and r.get("K") == K and "us" in r
                      and r["cfg"].get("SHIPPED_TC_PLANES")), default=float("nan"))
            print(f"M={M:4d} {N}x{K}: bf16 {bf:6.1f}  shipped {sh:6.1f} ({bf / sh:.2f}x)  planes {b:6.1f} "
                  f"({bf / b:.2f}x; +permute {perm:.1f})  tc PLANES {bx:6.1f} ({bf / bx:.2f}x)  best {best and best['cfg']}",
                  flush=True)
            save(gpu, rows)
        del ws, ps
    errs = [r for r in rows if "error" in r]
    print(f"{len(errs)} failed configs", *sorted({r['error'][:150] for r in errs}), sep="\n  ")
    print(f"total {time.time() - t0:.0f} s")


def save(gpu, rows):
    out = Path(os.environ.get("OUT", "/tmp")) / "w4a16_planes_probe.json"
    out.write_text(json.dumps(dict(gpu=gpu, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
