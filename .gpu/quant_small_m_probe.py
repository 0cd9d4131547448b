"""Issue 18: the static QSM quantizer (zero points + sorted gather) by row count: the shipped dispatch
(quant_act.run_quantize: the small-M tile kernel, one row per program from _row_gather_min_m rows) against the tile kernel
with its large-M config and the row gather (8 and 16 warps) forced at every M. 32 calls per CUDA graph."""
import os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels.int8 import quant_act as qa, reference as ref8
from qpass.kernels.tiling import cdiv, next_pow2


def tile(x, step, zero, gather, q, so):
    M, C = x.shape
    K = gather.shape[0]
    cfg = qa.STATIC_CONFIG
    qa._quant_static[(cdiv(K, cfg["BLOCK_K"]) * cdiv(M, cfg["BLOCK_R"]),)](
        x, step, zero, gather, q, so, M, K, C, x.stride(0), q.stride(0), 0, 7, HAS_ZERO=True, GATHER=True, **cfg)


def row(x, step, zero, gather, q, so, warps):
    M, C = x.shape
    K = gather.shape[0]
    qa._quant_static_row_gather[(M,)](x, step, zero, gather, q, so, M, K, C, x.stride(0), q.stride(0), 0, 7,
                                       HAS_ZERO=True, CP=next_pow2(C), BLOCK_K=1024, num_warps=warps)


print(torch.cuda.get_device_name())
rows = []
for C in (4096, 14336):
    for M in (1, 4, 16, 64, 128, 256, 512, 4096):
        n = 32 if M <= 512 else 4
        xs = [torch.randn(M, C, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
        gather = torch.randperm(C, device="cuda").to(torch.int32)
        zero = torch.randint(-8, 8, (C,), device="cuda").float()
        step = torch.full((1,), 0.5, device="cuda")
        q = torch.empty(M, C, dtype=torch.int8, device="cuda")
        so = torch.empty(M, dtype=torch.float32, device="cuda")
        ref, _ = ref8.quantize_activation_int8_ref(xs[0], step, 7, zero, gather)
        got, s = qa.run_quantize(xs[0], step, 7, zero, gather)
        assert torch.equal(got, ref) and torch.equal(s, torch.full((M,), 0.5, device="cuda"))
        tile(xs[0], step, zero, gather, q, so); assert torch.equal(q, ref)
        for w in (8, 16):
            q.zero_(); row(xs[0], step, zero, gather, q, so, w); assert torch.equal(q, ref)
        t = {"shipped": graph_time_us([lambda x=x: qa.run_quantize(x, step, 7, zero, gather) for x in xs]),
             "tile16x256": graph_time_us([lambda x=x: tile(x, step, zero, gather, q, so) for x in xs]),
             "row_w8": graph_time_us([lambda x=x: row(x, step, zero, gather, q, so, 8) for x in xs]),
             "row_w16": graph_time_us([lambda x=x: row(x, step, zero, gather, q, so, 16) for x in xs]),
             "clone": graph_time_us([lambda x=x: x.clone() for x in xs])}
        rows.append((M, C, t))
        print(f"M={M:5d} C={C:5d} " + " | ".join(f"{k} {v:7.2f}" for k, v in t.items()), flush=True)
