"""W4A16 over the prompt range (16 <= M <= 2048), GPU: which path is fastest per M and shape?

    python benchmarks/w4a16_prompt_sweep.py [--ms 16,32,64,128,256] [--shapes 4096x4096,...] [--tiles all|short]
        [--out X.json]

Same process, Llama-3-8B shapes, g128 symmetric int4 weights, bf16 activations; per (M, shape): bf16 cuBLAS
(F.linear), the shipped W4A16 op's paths "tc" (int4/tc.py, its shipped config for M) and "dequant" (dequantize
once + cuBLAS), and "tc_tile": int4/tc.py over a grid of configs (tiles, split-K, orientation). Timing as benchmarks/gemm.py (cuda_timing.graph_time_us:
one CUDA graph over enough weight copies that HBM, not L2, serves the weights); every output is checked against
the pure-torch reference first (a config that fails the check is reported, not timed). Prints, per (M, shape),
the best of each path and its ratio to bf16; the JSON holds every timing. Every "tc" timing is made twice: with
the codes unpacked straight to bf16 (FLOAT_UNPACK, unpack.nibble_floats: the shipped form) and through int32
(`_int`). `--tiles short`: the shipped config and a few of the best of the full grid only.
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

from cuda_timing import graph_time_us  # noqa: E402

sys.path.insert(0, str(ROOT))
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4 import reference as ref4, tc as k_tc, w4a16 as k_w4a16  # noqa: E402
from qpass.kernels.tiling import pick  # noqa: E402

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]
MS = [16, 32, 64, 128, 256]
ROTATE_BYTES = 256 << 20


SHORT_TILES = [  # the best of the 2026-12-05 H200 grid at 128-256 rows (prompt_h200/w4a16_prompt_round2.json)
    dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, SWAP=False, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, SPLIT_K=1, SWAP=True, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, SWAP=False, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, SWAP=True, num_warps=4, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SPLIT_K=2, SWAP=False, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, SPLIT_K=1, SWAP=False, num_warps=8, num_stages=3),
]


def tiles(M, short=False):
    """The candidate configs for M rows: at small M (memory-bound) the swap-AB form with split-K over long K
    steps, the group scale on the weights or after the dot; from 128 rows both orientations, split-K 1 or 2."""
    if short:
        return [] if M <= 64 else SHORT_TILES
    out = []
    if M <= 64:
        for bn in (64, 128):
            for bk in (128, 256):
                for sk in (2, 4, 8):
                    for sa in (False, True):
                        out.append(dict(BLOCK_M=max(16, M), BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk, SCALE_AFTER=sa,
                                        num_warps=4, num_stages=3))
        return out
    for swap in (True, False):
        for bm, nw in ((64, 4), (128, 8)):
            for bn in (64, 128):
                for bk in (64, 128):
                    for sk in (1, 2):
                        out.append(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk, SWAP=swap, num_warps=nw,
                                        num_stages=3))
    return out


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def copies(nbytes):
    return max(2, min(48, -(-ROTATE_BYTES // max(nbytes, 1))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="N x K of each weight")
    ap.add_argument("--tiles", default="all", choices=("all", "short"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "w4a16_prompt.json"))
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    res = []
    for N, K in (map(int, shape.split("x")) for shape in args.shapes.split(",")):
        g = torch.Generator(device="cuda").manual_seed(N + K)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
        q, s, _ = fmt.quantize_int4(w, 128, symmetric=True)
        p = fmt.pack_int4(q)
        s16 = s.to(torch.bfloat16)
        ws = [w] + [w.clone() for _ in range(copies(w.numel() * 2) - 1)]
        ps = [(p, s16)] + [(p.clone(), s16.clone()) for _ in range(copies(p.numel()) - 1)]
        for M in map(int, args.ms.split(",")):
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            yr = ref4.w4a16_linear_ref(x, p, s16, None, None, 128)

            def rec(path, fn, cfg=None):
                try:
                    err = rel_err(fn(p, s16), yr)
                    if err > 1e-2:
                        raise AssertionError(f"rel err {err:.2e}")
                    us = graph_time_us([lambda pp=pp, ss=ss: fn(pp, ss) for pp, ss in ps])
                    res.append(dict(M=M, N=N, K=K, path=path, cfg=cfg, us=round(us, 2), rel_err=err))
                except Exception as e:  # noqa: BLE001
                    res.append(dict(M=M, N=N, K=K, path=path, cfg=cfg, error=f"{type(e).__name__}: {str(e)[:160]}"))

            bf = graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in ws])
            res.append(dict(M=M, N=N, K=K, path="bf16", us=round(bf, 2)))
            rec("dequant", lambda pp, ss: k_w4a16.w4a16_linear_triton(x, pp, ss, None, None, 128, kernel="dequant"))
            shipped = dict(pick(k_tc.TC_CONFIGS, M))
            for cfg, path in [(shipped, "tc")] + [(c, "tc_tile") for c in tiles(M, args.tiles == "short")]:
                for fu in (True, False):
                    c = dict(cfg, FLOAT_UNPACK=fu)
                    rec(path if fu else path + "_int", lambda pp, ss, c=c: k_w4a16.w4a16_linear_triton(
                        x, pp, ss, None, None, 128, config=c, kernel="tc"), c)
            best = {}
            for r in res:
                if r["M"] == M and r["N"] == N and r["K"] == K and "us" in r:
                    if r["path"] not in best or r["us"] < best[r["path"]]["us"]:
                        best[r["path"]] = r
            line = "  ".join(f"{k} {v['us']:.1f} ({bf / v['us']:.2f}x)" for k, v in best.items())
            print(f"M={M:5d} {N}x{K}: {line}  best tile {best.get('tc_tile', {}).get('cfg')}", flush=True)
        del ws, ps
    errors = [r for r in res if "error" in r]
    print(f"{len(errors)} failed configs", *{r["error"][:100] for r in errors}, sep="\n  ")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(gpu=gpu, torch=torch.__version__, rows=res), indent=1))


if __name__ == "__main__":
    main()
