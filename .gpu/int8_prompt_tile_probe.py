"""The int8 GEMM (row steps: QSM's prompt path after the unpack pass, and W8A8) at 128-512 rows, where its shipped
tile above 64 rows (256 x 128) leaves most SMs idle at N = 4096: GPU µs per call under CUDA-graph replay for the
shipped config and smaller tiles, beside bf16, on Llama-3-8B's four GEMM shapes.
    python .gpu/int8_prompt_tile_probe.py --json out.json
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
from qpass.kernels import formats as F  # noqa: E402
from qpass.kernels.int4.dequant import dequantize_int4_triton  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--json")
args = ap.parse_args()
dev, bf = "cuda", torch.bfloat16
SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
CONFIGS = {
    "shipped": None,
    "64x128": dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=4),
    "128x128": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3),
    "128x128s4": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=4),
    "128x256": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3),
    "64x256": dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3),
}


rows, bad = [], []
for N, K in SHAPES:
    w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
    w8 = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
    ws = torch.rand(N, device=dev) * 1e-3 + 1e-4
    q4 = F.pack_int4(torch.randint(-8, 8, (N, K), device=dev, dtype=torch.int8))
    unpack_us = graph_us(lambda: dequantize_int4_triton(q4, None, None, -1, K, torch.int8, int_out=True), 5, 10)
    print(f"unpack {N}x{K}: {unpack_us:.1f} us", flush=True)
    for M in (128, 256, 512, 2048):
        x = torch.randn(M, K, device=dev, dtype=bf)
        x8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
        xs = torch.rand(M, device=dev) * 1e-2
        ref = R8.int8_linear_ref(x8, w8, ws, xs, None, bf)
        row = dict(M=M, N=N, K=K, unpack=unpack_us, bf16=graph_us(lambda: F_.linear(x, w), 5, 10))
        for name, cfg in CONFIGS.items():
            y = G8.int_mm(x8, w8, ws, xs, None, bf, False, cfg)
            err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            if err > 1e-2:
                bad.append(f"{name} {M} {N} {K}: {err:.2e}")
            row[name] = graph_us(lambda: G8.int_mm(x8, w8, ws, xs, None, bf, False, cfg), 5, 10)
        rows.append(row)
        print(f"M={M:>3} {N:>5}x{K:<5} bf16 {row['bf16']:6.1f} | " +
              " | ".join(f"{n} {row[n]:6.1f}" for n in CONFIGS), flush=True)
if args.json:
    json.dump(dict(device=torch.cuda.get_device_name(), rows=rows, bad=bad), open(args.json, "w"), indent=1)
print("FAILED: " + "; ".join(bad) if bad else "all configs match the reference")
