"""Split-K reduced in the kernel and the integer-step W4A8 tile, on hardware (both measured slower and reverted:
run this at commit 5b7a7c1 to reproduce; docs/benchmarks.md "Split-K reduced in the kernel"): correctness of every
split-K path, called repeatedly and replayed in a CUDA graph, against the references; then per-call GPU time under
CUDA-graph replay (what batched decode pays) of the ops at 2-16 rows on Llama-3-8B's four GEMM shapes, for this
tree or another one (`--tree DIR`: the same script on an older checkout, for an A/B on one warm GPU). Also the
grouped int8 tile at K = 4096 with an explicit SPLIT_K, and (where the tree has it) the integer-step tile.
    python .gpu/split_k_probe.py [--tree .gpu/old_tree] [--check] --json out.json
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F_

ap = argparse.ArgumentParser()
ap.add_argument("--tree", default=".")
ap.add_argument("--check", action="store_true")
ap.add_argument("--json")
args = ap.parse_args()
sys.path.insert(0, args.tree)
from graph_timing import graph_us  # noqa: E402
from qpass.kernels import formats as F  # noqa: E402
from qpass.kernels import ops as _ops  # noqa: E402,F401
from qpass.kernels.int4.reference import w4a16_linear_ref  # noqa: E402
from qpass.kernels.int8 import reference as R8  # noqa: E402
from qpass.kernels.int8 import gemm as G8  # noqa: E402
from qpass.kernels.int8.gemm import int_mm, GROUPED_CONFIGS  # noqa: E402

INT_STEPS = hasattr(G8, "INT_STEPS_CONFIGS")  # the integer-step tile (QSM) exists in this tree
from qpass.kernels.ternary.reference import ternary_linear_ref  # noqa: E402

dev, bf = "cuda", torch.bfloat16
ops = torch.ops.qpass
SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
torch.manual_seed(0)


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def w4a16_case(N, K, G=128, sym=True):
    q, s, z = F.quantize_int4(torch.randn(N, K, device=dev) * 0.02, G, sym)
    return F.pack_int4(q), s.to(bf), (z.to(bf) if z is not None else None)


def w4a8_case(N, K):  # QSM-like: asymmetric g64, integer group steps
    q = torch.randint(0, 16, (N, K), device=dev, dtype=torch.int8)
    r = torch.rand(N, device=dev) * 1e-3 + 1e-4
    ws = r[:, None] * torch.randint(1, 4, (N, K // 64), device=dev)
    wz = torch.randint(0, 16, (N, K // 64), device=dev).float()
    return F.pack_int4(q), ws, wz, r


failed, rows = [], []
if args.check:
    for N, K in SHAPES:
        p, s, z = w4a16_case(N, K, 64, False)
        b = torch.randn(N, device=dev, dtype=bf)
        for M in (2, 8, 16, 40, 100):
            x = torch.randn(M, K, device=dev, dtype=bf)
            errs = []
            for _ in range(4):  # repeated calls: the counters must be back at zero after each
                x.normal_()
                errs.append(rel(ops.w4a16_linear(x, p, s, z, b, 64), w4a16_linear_ref(x, p, s, z, b, 64)))
            y = ops.w4a16_linear(x, p, s, z, b, 64)  # in a CUDA graph, replayed on fresh x
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                yg = ops.w4a16_linear(x, p, s, z, b, 64)
            for _ in range(3):
                x.normal_()
                g.replay()
                errs.append(rel(yg, w4a16_linear_ref(x, p, s, z, b, 64)))
            ok = max(errs) < 1e-2
            print(f"check w4a16 {M:>3} x {N} x {K}: max rel err {max(errs):.2e} {'ok' if ok else 'FAILED'}", flush=True)
            failed += [] if ok else [f"w4a16 {M} {N} {K}"]
        p4, ws, wz, r = w4a8_case(N, K)
        for M in (8, 16, 128, 512):
            x = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
            xs = torch.rand(M, device=dev) * 1e-2
            errs = [rel(ops.w4a8_linear(x, p4, ws, xs, b, bf, 64, None, wz, r),
                        R8.w4a8_linear_ref(x, p4, ws, xs, b, bf, 64, None, wz)) for _ in range(3)]
            for split in (2, 4):
                cfg = dict(GROUPED_CONFIGS[0][1], SPLIT_K=split)
                errs += [rel(int_mm(x, p4, ws, xs, b, bf, True, cfg, 64, None, wz),
                             R8.w4a8_linear_ref(x, p4, ws, xs, b, bf, 64, None, wz)) for _ in range(3)]
                if INT_STEPS:
                    errs += [rel(int_mm(x, p4, ws, xs, b, bf, True, cfg, 64, None, wz, r),
                                 R8.w4a8_linear_ref(x, p4, ws, xs, b, bf, 64, None, wz)) for _ in range(3)]
            ok = max(errs) < 1e-2
            print(f"check w4a8 {M:>3} x {N} x {K}: max rel err {max(errs):.2e} {'ok' if ok else 'FAILED'}", flush=True)
            failed += [] if ok else [f"w4a8 {M} {N} {K}"]
    t1, t2, a1, a2 = F.quantize_ternary(torch.randn(4096, 4096, device=dev), 64)
    t1, t2, a1, a2 = F.pack_trits(t1), F.pack_trits(t2), a1.to(bf), a2.to(bf)
    x = torch.randn(8, 4096, device=dev, dtype=bf)
    e = max(rel(ops.ternary_linear(x, t1, t2, a1, a2, None, 64), ternary_linear_ref(x, t1, t2, a1, a2, None, 64))
            for _ in range(3))
    print(f"check ternary 8 rows: {e:.2e} {'ok' if e < 1e-2 else 'FAILED'}", flush=True)
    failed += [] if e < 1e-2 else ["ternary"]

for N, K in SHAPES:
    w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
    p, s, _ = w4a16_case(N, K)
    p4, ws, wz, r = w4a8_case(N, K)
    for M in (2, 8, 16):
        x = torch.randn(M, K, device=dev, dtype=bf)
        x8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
        xs = torch.rand(M, device=dev) * 1e-2
        row = dict(M=M, N=N, K=K, tree=args.tree)
        row["bf16"] = graph_us(lambda: F_.linear(x, w))
        row["w4a16"] = graph_us(lambda: ops.w4a16_linear(x, p, s, None, None, 128))
        row["w4a8_qsm"] = graph_us(lambda: ops.w4a8_linear(x8, p4, ws, xs, None, bf, 64, None, wz, r))
        row["w4a8_float_steps"] = graph_us(lambda: int_mm(x8, p4, ws, xs, None, bf, True, None, 64, None, wz))
        if K == 4096:
            for split in (2, 4):
                cfg = dict(GROUPED_CONFIGS[0][1], SPLIT_K=split)
                row[f"w4a8_tile_split{split}"] = graph_us(lambda: int_mm(x8, p4, ws, xs, None, bf, True, cfg, 64,
                                                                          None, wz))
                if INT_STEPS:
                    row[f"w4a8_int_split{split}"] = graph_us(lambda: int_mm(x8, p4, ws, xs, None, bf, True, cfg, 64,
                                                                            None, wz, r))
        rows.append(row)
        print(" | ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
for N, K in SHAPES if INT_STEPS else []:  # prompt rows: the unpack pass + int8 GEMM (the op) vs the integer-step tile
    p4, ws, wz, r = w4a8_case(N, K)
    w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
    for M in (128, 512):
        x = torch.randn(M, K, device=dev, dtype=bf)
        x8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
        xs = torch.rand(M, device=dev) * 1e-2
        row = dict(M=M, N=N, K=K, tree=args.tree, bf16=graph_us(lambda: F_.linear(x, w), 5, 10))
        row["w4a8_qsm"] = graph_us(lambda: ops.w4a8_linear(x8, p4, ws, xs, None, bf, 64, None, wz, r), 5, 10)
        for name, cfg in (("int_tile64", G8.INT_STEPS_CONFIGS[-1][1]), ("int_tile256", G8.W4A8_CONFIGS[-1][1]),
                          ("int_tile128", dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8,
                                               num_stages=4))):
            row[name] = graph_us(lambda: int_mm(x8, p4, ws, xs, None, bf, True, cfg, 64, None, wz, r), 5, 10)
        rows.append(row)
        print(" | ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
if args.json:
    json.dump(dict(device=torch.cuda.get_device_name(), rows=rows, failed=failed), open(args.json, "w"), indent=1)
print("FAILED: " + ", ".join(failed) if failed else "split-K checks ok" if args.check else "timed")
sys.exit(1 if failed else 0)
