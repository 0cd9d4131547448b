"""Issue 18: the static quantizer's one-row-per-program gather, with the row held as fp32 (shipped) or in its own
dtype (bf16: half the on-chip bytes per row, converted after the gather). CUDA-graph timing."""
import os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch, triton, triton.language as tl
from cuda_timing import graph_time_us
from qpass.kernels.int8 import quant_act as qa, reference as ref8
from qpass.kernels.tiling import next_pow2


@triton.jit
def _row_gather_native(x_ptr, s_ptr, z_ptr, g_ptr, q_ptr, so_ptr, M, K, C, stride_xm, stride_qm, stride_s, qmax,
                       HAS_ZERO: tl.constexpr, CP: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(0)
    c = tl.arange(0, CP)
    x = tl.load(x_ptr + m * stride_xm + c, mask=c < C, other=0.0)
    s = tl.load(s_ptr + m * stride_s).to(tl.float32)
    tl.store(so_ptr + m, s)
    inv = tl.math.div_rn(1.0, s)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        src = tl.load(g_ptr + k, mask=k < K, other=C)
        v = tl.where(src < C, tl.gather(x, tl.minimum(src, CP - 1), 0).to(tl.float32), 0.0)
        r = (v * inv + 12582912.0) - 12582912.0
        if HAS_ZERO:
            r += tl.load(z_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        r = tl.minimum(tl.maximum(r, -qmax - 1.0), qmax * 1.0)
        tl.store(q_ptr + m * stride_qm + k, r.to(tl.int8), mask=k < K)


def run(kernel, x, step, zero, gather, q, so, bk, warps):
    M, C = x.shape
    K = gather.shape[0]
    kernel[(M,)](x, step, zero, gather, q, so, M, K, C, x.stride(0), q.stride(0), 0, 7, HAS_ZERO=True,
                 CP=next_pow2(C), BLOCK_K=bk, num_warps=warps)


print(torch.cuda.get_device_name())
for C in (4096, 14336):
    for M in (512, 4096):
        n = 8 if M == 512 else 2
        xs = [torch.randn(M, C, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
        gather = torch.randperm(C, device="cuda").to(torch.int32)
        zero = torch.randint(-8, 8, (C,), device="cuda").float()
        step = torch.full((1,), 0.5, device="cuda")
        q = torch.empty(M, C, dtype=torch.int8, device="cuda")
        so = torch.empty(M, dtype=torch.float32, device="cuda")
        ref, _ = ref8.quantize_activation_int8_ref(xs[0], step, 7, zero, gather)
        t = {}
        for name, k in (("fp32", qa._quant_static_row_gather), ("native", _row_gather_native)):
            for bk, w in ((1024, 8), (512, 8), (1024, 16), (2048, 8)):
                q.zero_(); run(k, xs[0], step, zero, gather, q, so, bk, w); assert torch.equal(q, ref), (name, bk, w)
                t[f"{name} bk{bk} w{w}"] = graph_time_us([lambda x=x: run(k, x, step, zero, gather, q, so, bk, w) for x in xs])
        t["clone"] = graph_time_us([lambda x=x: x.clone() for x in xs])
        print(f"M={M:5d} C={C:5d} " + " | ".join(f"{k} {v:7.1f}" for k, v in t.items()), flush=True)
