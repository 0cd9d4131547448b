"""Issue 18, batched decode: W4A8 at 4-32 rows through W4A16's split-K tensor-core tile on the int8 codes
(int8/w4a8.py kernel "tc", int4/tc.py HAS_XS) against the shipped dispatch ("mma" tile / long-K split) and bf16;
and the shipped tile's two K-loop schedules ("mma" = LOOP_STAGES as shipped: group steps prefetched; "mma_old" =
LOOP_STAGES None, the launch-level pipelining only, as before 2026-12-07).

QSM's form: asymmetric g64 weights (fp32 steps and zero points), a bias, per-row activation steps, bf16 out;
Llama-3-8B's four GEMM shapes. Each config is checked against the reference before it is timed (CUDA graphs over
weight copies larger than L2, benchmarks/cuda_timing.py).

    python .gpu/w4a8_tc_probe.py            # table last; JSON to $OUT/w4a8_tc_probe.json
"""
import json
import os
import sys

sys.path.insert(0, "benchmarks")
sys.path.insert(0, ".")

import torch  # noqa: E402

from cuda_timing import graph_time_us  # noqa: E402
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4 import tc  # noqa: E402
from qpass.kernels.int8 import gemm  # noqa: E402
from qpass.kernels.int8 import reference as ref8  # noqa: E402
from qpass.kernels.int8.w4a8 import choose_kernel, w4a8_linear_triton  # noqa: E402

SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
ROWS = (4, 8, 16, 32)
EXTRA = {  # alternatives to the shipped TC_CONFIGS bucket
    "n64 split4": dict(BLOCK_N=64, BLOCK_K=128, SPLIT_K=4, SWAP=True, num_warps=4, num_stages=3),
    "n64 split16": dict(BLOCK_N=64, BLOCK_K=128, SPLIT_K=16, SWAP=True, num_warps=4, num_stages=3),
    "n128 split8": dict(BLOCK_N=128, BLOCK_K=128, SPLIT_K=8, SWAP=True, num_warps=4, num_stages=3),
}


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    gpu = torch.cuda.get_device_name()
    print(gpu, flush=True)
    g = torch.Generator().manual_seed(0)
    table = []
    for N, K in SHAPES:
        ng = K // 64
        q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.int8)
        p = fmt.pack_int4(q).cuda()
        ws = (torch.rand(N, ng, generator=g) * 1e-3 + 1e-4).cuda()
        wz = torch.randint(0, 16, (N, ng), generator=g).float().cuda()
        bias = torch.randn(N, generator=g).to(torch.bfloat16).cuda()
        copies = max(2, -(-300_000_000 // p.numel()))
        ps = [p] + [p.clone() for _ in range(copies - 1)]
        wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        wbs = [wb] + [wb.clone() for _ in range(max(2, -(-300_000_000 // (wb.numel() * 2))) - 1)]
        for M in ROWS:
            x = torch.randint(-127, 128, (M, K), generator=g, dtype=torch.int8).cuda()
            xs = (torch.rand(M, generator=g) * 0.01 + 0.001).cuda()
            xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            ref = ref8.w4a8_linear_ref(x, p, ws, xs, bias, torch.float32, 64, None, w_zero=wz)
            row = dict(N=N, K=K, M=M, shipped_kernel=choose_kernel(x, 64))
            row["bf16"] = graph_time_us([lambda w=w: torch.nn.functional.linear(xb, w) for w in wbs])

            def call(a, kernel=None, config=None):
                return w4a8_linear_triton(x, a, ws, xs, bias, torch.bfloat16, 64, w_zero=wz, kernel=kernel,
                                          config=config)

            row["shipped"] = graph_time_us([lambda a=a: call(a) for a in ps])
            old = dict(gemm.GROUPED_LONG_K_CONFIG if K >= gemm.GROUPED_LONG_K else gemm.GROUPED_CONFIGS[0][1],
                       LOOP_STAGES=None)
            assert rel(call(p, "mma", old), ref) < 1e-2
            row["mma_old"] = graph_time_us([lambda a=a: call(a, "mma", old) for a in ps])
            cfgs = {"tc": None, **{k: dict(v, BLOCK_M=max(16, M)) for k, v in EXTRA.items()}}
            for name, cfg in cfgs.items():
                try:
                    e = rel(call(p, "tc", cfg), ref)
                    if e > 1e-2:
                        raise AssertionError(f"rel err {e:.2e}")
                    row[name] = graph_time_us([lambda a=a, c=cfg: call(a, "tc", c) for a in ps])
                except Exception as exc:  # noqa: BLE001
                    row[name] = float("nan")
                    print(name, type(exc).__name__, str(exc)[:300], flush=True)
            table.append(row)
            best = min((row[k], k) for k in cfgs if row[k] == row[k])
            print(f"N={N:5d} K={K:5d} M={M:2d}: bf16 {row['bf16']:6.1f}  shipped ({row['shipped_kernel']}) "
                  f"{row['shipped']:6.1f} (old loop {row['mma_old']:6.1f})  tc {row['tc']:6.1f}  best {best[0]:6.1f} ({best[1]})  | "
                  + " | ".join(f"{k} {row[k]:.1f}" for k in EXTRA), flush=True)
        del ps, wbs
    for M in ROWS:  # per Llama-3-8B layer (the four GEMMs)
        sel = [r for r in table if r["M"] == M]
        print(f"layer at M={M:2d}: bf16 {sum(r['bf16'] for r in sel):6.1f}  shipped {sum(r['shipped'] for r in sel):6.1f}"
              f"  old loop {sum(r['mma_old'] for r in sel):6.1f}  tc {sum(r['tc'] for r in sel):6.1f}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "w4a8_tc_probe.json"), "w") as f:
            json.dump(dict(gpu=gpu, torch=torch.__version__, rows=table), f, indent=1)


if __name__ == "__main__":
    main()
