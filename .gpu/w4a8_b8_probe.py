"""Issue 18 batched decode: W4A8 g64 (zero points, integer group steps: QSM's weights) at 2-16 rows, the shipped
dispatch (dp4a rows to 4, the int8 tile "mma" to 16) against W4A16's tile on the nibble planes with 64-wide groups
("tc", on request) and bf16; W4A16 g64 asymmetric bf16 at 8 / 16 rows, the plane step with 64-wide groups against
the interleaved one (shipped). Every output checked against its reference. CUDA-graph timing over
weight copies larger than L2."""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int4 import reference as ref4
from qpass.kernels.int4 import tc as tc4
from qpass.kernels.int4.w4a16 import w4a16_linear_triton
from qpass.kernels.int8 import reference as ref8
from qpass.kernels.int8.w4a8 import choose_kernel, w4a8_linear_triton

OUT = os.environ.get("OUT", "/tmp")
print(torch.cuda.get_device_name(), flush=True)
SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
rows_out = []


def copies(t):
    return [t] + [t.clone() for _ in range(max(2, -(-200_000_000 // (t.numel() * t.element_size()))) - 1)]


def check(y, r, what):
    err = ((y.float() - r).norm() / r.norm()).item()
    assert err < 1e-2, (what, err)


print("W4A8 g64: M | N x K | bf16 | mma | shipped (kernel) | tc planes | shipped/bf16 | tc/bf16", flush=True)
for N, K in SHAPES:
    torch.manual_seed(N + K)
    row = torch.rand(N, device="cuda") * 1e-3 + 1e-4
    ws = row[:, None] * torch.randint(1, 9, (N, K // 64), device="cuda").float()
    wz = torch.randint(4, 12, (N, K // 64), device="cuda").float()
    wq = fmt.pack_int4(torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int8))
    wqs = copies(wq)
    wbs = copies(torch.randn(N, K, device="cuda", dtype=torch.bfloat16))
    for M in (2, 4, 8, 16):
        x = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
        xs = torch.rand(M, device="cuda") * 0.01 + 0.001
        xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        r = ref8.w4a8_linear_ref(x, wq, ws, xs, None, torch.float32, 64, None, w_zero=wz)
        t = {"bf16": graph_time_us([lambda b=b: torch.nn.functional.linear(xb, b) for b in wbs])}
        for name, k in (("mma", "mma"), ("shipped", None), ("tc", "tc")):
            check(w4a8_linear_triton(x, wq, ws, xs, None, torch.bfloat16, 64, kernel=k, w_zero=wz, w_step=row), r, name)
            t[name] = graph_time_us([lambda a=a, k=k: w4a8_linear_triton(x, a, ws, xs, None, torch.bfloat16, 64,
                                                                          kernel=k, w_zero=wz, w_step=row) for a in wqs])
        kern = choose_kernel(x, 64, None, row)
        rows_out.append(dict(op="w4a8_g64", M=M, N=N, K=K, kernel=kern, **t))
        print(f"{M} | {N}x{K} | {t['bf16']:.1f} | {t['mma']:.1f} | {t['shipped']:.1f} ({kern}) | {t['tc']:.1f} | "
              f"{t['bf16'] / t['shipped']:.2f}x | {t['bf16'] / t['tc']:.2f}x", flush=True)
    del wqs, wbs

print("\nW4A16 g64 asym bf16: M | N x K | bf16 | interleaved tc (shipped) | planes tc | planes/bf16", flush=True)
for N, K in SHAPES:
    torch.manual_seed(N)
    q, s, z = fmt.quantize_int4(torch.randn(N, K, device="cuda"), 64, False)
    p = fmt.pack_int4(q)
    s, z = s.to(torch.bfloat16), z.to(torch.bfloat16)
    ps = copies(p)
    wbs = copies(torch.randn(N, K, device="cuda", dtype=torch.bfloat16))
    for M in (8, 16):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        r = ref4.w4a16_linear_ref(x.float(), p, s.float(), z.float(), None, 64)
        inter = dict(tc4.TC_CONFIGS[0][1], PLANES=False)
        t = {"bf16": graph_time_us([lambda b=b: torch.nn.functional.linear(x, b) for b in wbs])}
        for name, cfg in (("interleaved", inter), ("planes", dict(tc4.TC_CONFIGS[0][1]))):
            check(w4a16_linear_triton(x, p, s, z, None, 64, config=cfg, kernel="tc"), r, name)
            t[name] = graph_time_us([lambda a=a, cfg=cfg: w4a16_linear_triton(x, a, s, z, None, 64, config=cfg,
                                                                               kernel="tc") for a in ps])
        rows_out.append(dict(op="w4a16_g64", M=M, N=N, K=K, **t))
        print(f"{M} | {N}x{K} | {t['bf16']:.1f} | {t['interleaved']:.1f} | {t['planes']:.1f} | "
              f"{t['bf16'] / t['planes']:.2f}x", flush=True)
    del ps, wbs

print("\nper layer (four GEMMs summed), us")
for op, keys in (("w4a8_g64", ("bf16", "mma", "shipped", "tc")), ("w4a16_g64", ("bf16", "interleaved", "planes"))):
    for M in sorted({e["M"] for e in rows_out if e["op"] == op}):
        rs = [e for e in rows_out if e["op"] == op and e["M"] == M]
        print(op, M, " | ".join(f"{k} {sum(e[k] for e in rs):.1f}" for k in keys))
json.dump(dict(gpu=torch.cuda.get_device_name(), rows=rows_out), open(f"{OUT}/w4a8_b8_probe.json", "w"), indent=1)
