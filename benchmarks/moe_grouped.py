"""qpass::moe_w4a16 on a GPU: the grouped Triton kernel against the pure-torch reference (correctness), and its
time against dequantize-then-matmul per expert in torch (the reference's own path), at decode and prefill row
counts. `PYTHONPATH=. python3 benchmarks/moe_grouped.py [--json out.json]`."""
from __future__ import annotations

import argparse
import json

import torch
import triton

from qpass.kernels.formats import pack_int4
from qpass.kernels.moe.grouped import moe_w4a16_triton
from qpass.kernels.moe.reference import moe_w4a16_ref
from qpass.numerics import quantize_weight

# Mixtral-8x7B's expert shapes: gate_up [8, 2*14336, 4096], down [8, 4096, 14336]; top-2
SHAPES = [("gate_up", 8, 2 * 14336, 4096), ("down", 8, 4096, 14336)]


def experts(E, N, K, group=128, device="cuda"):
    w = torch.randn(E * N, K, device=device)
    q = quantize_weight(w, 4, group, True)
    return (pack_int4(q.qweight).reshape(E, N, -1), q.scale.reshape(E, N, -1).contiguous())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name, E, N, K in SHAPES:
        packed, scales = experts(E, N, K)
        for tokens in (1, 4, 64):
            S = tokens * 2  # top-2: every token reaches 2 experts
            ids = torch.randint(0, E, (S,), device="cuda").sort().values
            offs = torch.bincount(ids, minlength=E).cumsum(0)
            x = torch.randn(S, K, device="cuda", dtype=torch.float16)
            ref = moe_w4a16_ref(x, packed, scales, None, offs, 128)
            out = moe_w4a16_triton(x, packed, scales, None, offs, 128)
            err = float((out.float() - ref.float()).abs().max() / ref.float().abs().max())
            t_kernel = triton.testing.do_bench(lambda: moe_w4a16_triton(x, packed, scales, None, offs, 128))
            t_ref = triton.testing.do_bench(lambda: moe_w4a16_ref(x, packed, scales, None, offs, 128))
            hit = int((torch.diff(offs, prepend=offs.new_zeros(1)) > 0).sum())
            gbytes = hit * N * K / 2 / 1e9  # int4 weights of the experts hit, read at least once
            row = dict(shape=name, E=E, N=N, K=K, tokens=tokens, rows=S, experts_hit=hit, rel_err=err,
                       kernel_ms=t_kernel, reference_ms=t_ref, weight_GBps=gbytes / (t_kernel / 1e3))
            rows.append(row)
            print(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                           rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
