"""Issue 18: tile configs of the grouped W4A8 kernel ("mma": in-register int4, float g64 steps) at decode batch
sizes 8 / 32 (gemm.GROUPED_CONFIGS: 16x32 tiles up to 16 rows, 64x128 above). CUDA-graph timing over weight copies
larger than L2."""
import os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int8 import reference as ref8
from qpass.kernels.int8.w4a8 import w4a8_linear_triton

CFGS = {"16x32": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
        "16x16": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=64, GROUP_M=8, num_warps=2, num_stages=4),
        "16x32s6": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=6),
        "32x32": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
        "32x64": dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
        "64x128": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4)}
print(torch.cuda.get_device_name())
for N, K in ((4096, 4096), (14336, 4096), (4096, 14336)):
    ws = torch.rand(N, K // 64, device="cuda") * 1e-3 + 1e-4
    wq = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
    wqs = [wq] + [wq.clone() for _ in range(max(2, -(-150_000_000 // wq.numel())) - 1)]
    for M in (8, 32):
        x = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
        xs = torch.rand(M, device="cuda") * 0.01 + 0.001
        ref = ref8.w4a8_linear_ref(x, wq, ws, xs, None, torch.float32, 64)
        t = {}
        for name, cfg in CFGS.items():
            try:
                y = w4a8_linear_triton(x, wq, ws, xs, None, torch.bfloat16, 64, kernel="mma", config=cfg)
                assert ((y.float() - ref).norm() / ref.norm()).item() < 1e-2
                t[name] = graph_time_us([lambda a=a, c=cfg: w4a8_linear_triton(x, a, ws, xs, None, torch.bfloat16, 64,
                                                                              kernel="mma", config=c) for a in wqs])
            except Exception as e:  # noqa: BLE001
                t[name] = float("nan"); print(name, type(e).__name__, str(e)[:200])
        print(f"N={N:5d} K={K:5d} M={M:3d} " + " | ".join(f"{k} {v:7.1f}" for k, v in t.items()), flush=True)
    del wqs
