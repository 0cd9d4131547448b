"""The int8 GEMM (row steps: W8A8) at 1-16 rows (decode), where its shipped tile (16 x 128) puts only N / 128 CTAs
on the SMs (32 at N = 4096 on 132 SMs): GPU µs per call under CUDA-graph replay for the
shipped config and smaller tiles, beside bf16, on Llama-3-8B's four GEMM shapes.
    python .gpu/int8_small_m_probe.py --json out.json
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F_

sys.path.insert(0, ".")
from graph_timing import graph_us  # noqa: E402
from qpass.kernels.int8 import gemm as G8  # noqa: E402
from qpass.kernels.int8 import reference as R8  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--json")
args = ap.parse_args()
dev, bf = "cuda", torch.bfloat16
SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
CONFIGS = {
    "shipped": None,
    "16x64k256": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, GROUP_M=8, num_warps=4, num_stages=4),
    "16x32k256": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, GROUP_M=8, num_warps=4, num_stages=4),
    "16x32k128s6": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=6),
    "16x64k256w2": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, GROUP_M=8, num_warps=2, num_stages=5),
}


rows, bad = [], []
for N, K in SHAPES:
    w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
    w8 = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
    ws = torch.rand(N, device=dev) * 1e-3 + 1e-4
    for M in (1, 8, 16):
        x = torch.randn(M, K, device=dev, dtype=bf)
        x8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
        xs = torch.rand(M, device=dev) * 1e-2
        ref = R8.int8_linear_ref(x8, w8, ws, xs, None, bf)
        row = dict(M=M, N=N, K=K, bf16=graph_us(lambda: F_.linear(x, w), 5, 10))
        for name, cfg in CONFIGS.items():
            y = G8.int_mm(x8, w8, ws, xs, None, bf, False, cfg)
            err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            if err > 1e-2:
                bad.append(f"{name} {M} {N} {K}: {err:.2e}")
            row[name] = graph_us(lambda: G8.int_mm(x8, w8, ws, xs, None, bf, False, cfg), 5, 10)
        rows.append(row)
        print(f"M={M:>2} {N:>5}x{K:<5} bf16 {row['bf16']:6.1f} | " +
              " | ".join(f"{n} {row[n]:6.1f}" for n in CONFIGS), flush=True)
if args.json:
    json.dump(dict(device=torch.cuda.get_device_name(), rows=rows, bad=bad), open(args.json, "w"), indent=1)
print("FAILED: " + "; ".join(bad) if bad else "all configs match the reference")
