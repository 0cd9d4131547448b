"""Issue 18: split-K for the grouped W4A8 kernel ("mma": in-register int4, g64 steps, weight zero points and a
bias as the asymmetric QSM presets lower them) at decode batch sizes 4-32, against bf16 (cuBLAS) in the same
process. Llama-3-8B shapes including the fused qkv / gate+up. CUDA-graph timing over weight copies larger than L2."""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int8 import reference as ref8
from qpass.kernels.int8.w4a8 import w4a8_linear_triton

def cfg(bn, split, stages=6, warps=4):
    return dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, SPLIT_K=split, num_warps=warps, num_stages=stages)

CFGS = {f"n{bn}s{sp}": cfg(bn, sp) for bn in (32, 64) for sp in (1, 2, 4, 8)}
CFGS["n16s4w2"] = cfg(16, 4, warps=2)
print(torch.cuda.get_device_name())
rows = []
for N, K in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
    ng = K // 64
    ws = torch.rand(N, ng, device="cuda") * 1e-3 + 1e-4
    wz = torch.randint(0, 16, (N, ng), device="cuda").float()
    wq = fmt.pack_int4(torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int8))
    bias = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    wqs = [wq] + [wq.clone() for _ in range(max(2, -(-150_000_000 // wq.numel())) - 1)]
    wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    wbs = [wb] + [wb.clone() for _ in range(max(2, -(-150_000_000 // wb.numel() // 2)) - 1)]
    for M in (4, 8, 16, 32):
        x = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
        xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        ref = ref8.w4a8_linear_ref(x, wq, ws, None, bias, torch.float32, 64, w_zero=wz)
        t = {"bf16": graph_time_us([lambda a=a: xb @ a.t() for a in wbs]),
             "default": graph_time_us([lambda a=a: w4a8_linear_triton(x, a, ws, None, bias, torch.bfloat16, 64,
                                                                      w_zero=wz) for a in wqs])}
        for name, c in CFGS.items():
            try:
                y = w4a8_linear_triton(x, wq, ws, None, bias, torch.bfloat16, 64, kernel="mma", config=c, w_zero=wz)
                err = ((y.float() - ref).norm() / ref.norm()).item()
                assert err < 1e-2, err
                t[name] = graph_time_us([lambda a=a, c=c: w4a8_linear_triton(x, a, ws, None, bias, torch.bfloat16, 64,
                                                                            kernel="mma", config=c, w_zero=wz)
                                         for a in wqs])
            except Exception as e:  # noqa: BLE001
                t[name] = float("nan"); print(name, type(e).__name__, str(e)[:200])
        best = min((v, k) for k, v in t.items() if k not in ("bf16",) and v == v)
        rows.append(dict(N=N, K=K, M=M, **t))
        print(f"N={N:5d} K={K:5d} M={M:3d} bf16 {t['bf16']:6.1f} default {t['default']:6.1f} | "
              + " ".join(f"{k} {v:6.1f}" for k, v in t.items() if k not in ("bf16", "default"))
              + f" | best {best[1]} {best[0]:.1f} = {t['bf16'] / best[0]:.2f}x bf16", flush=True)
    del wqs, wbs
json.dump(rows, open(os.path.join(os.environ.get("OUT", "."), "w4a8_split_k_probe.json"), "w"), indent=1)
