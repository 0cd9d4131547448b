"""Issue 18: W4A8 with QSM's integer group steps (g64) at decode batch sizes: the W4A16 GEMV on the int8 rows
("gemv", rows past the first re-read W from L2) vs the in-register int4 tile kernel ("mma", the dispatch below 64
rows) vs bf16 F.linear. CUDA-graph timing over weight copies larger than L2."""
import os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int8 import reference as ref8
from qpass.kernels.int8.w4a8 import w4a8_linear_triton

print(torch.cuda.get_device_name())
for N, K in ((4096, 4096), (14336, 4096), (4096, 14336)):
    row = torch.rand(N, device="cuda") * 1e-4 + 1e-5
    ws = row[:, None] * torch.randint(1, 17, (N, K // 64), device="cuda").float()
    wq = fmt.pack_int4(torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8))
    copies = max(2, -(-150_000_000 // wq.numel()))
    wqs = [wq] + [wq.clone() for _ in range(copies - 1)]
    wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    wbs = [wb] + [wb.clone() for _ in range(max(2, -(-150_000_000 // (wb.numel() * 2))) - 1)]
    for M in (1, 2, 4, 8, 16, 32):
        x = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
        xs = torch.rand(M, device="cuda") * 0.01 + 0.001
        xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        ref = ref8.w4a8_linear_ref(x, wq, ws, xs, None, torch.float32, 64)
        t = {}
        for k in ("gemv", "mma"):
            y = w4a8_linear_triton(x, wq, ws, xs, None, torch.bfloat16, 64, kernel=k, w_step=row)
            err = ((y.float() - ref).norm() / ref.norm()).item()
            assert err < 1e-2, (k, err)
            t[k] = graph_time_us([lambda a=a, k=k: w4a8_linear_triton(x, a, ws, xs, None, torch.bfloat16, 64, kernel=k,
                                                                       w_step=row) for a in wqs])
        t["bf16"] = graph_time_us([lambda b=b: torch.nn.functional.linear(xb, b) for b in wbs])
        print(f"N={N:5d} K={K:5d} M={M:3d} " + " | ".join(f"{k} {v:7.1f}" for k, v in t.items())
              + f" | gemv/bf16 {t['bf16'] / t['gemv']:.2f}x mma/bf16 {t['bf16'] / t['mma']:.2f}x", flush=True)
    del wqs, wbs
