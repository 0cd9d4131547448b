"""Issue 18: the static QSM quantizer (per-column zero, sorted-channel gather): the tile kernel with row tiles
fastest in the grid (until 2026-12-06, re-declared here), the tile kernel with column blocks fastest
(quant_act._quant_static now: no gather), and one row per program gathering on chip (quant_act.run_quantize with a
gather now)."""
import os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch, triton, triton.language as tl
from cuda_timing import graph_time_us
from qpass.kernels.int8 import quant_act, reference as ref8


@triton.jit
def _quant_static_rows_first(x_ptr, s_ptr, z_ptr, g_ptr, q_ptr, M, K, C, stride_xm, stride_qm, qmax,
                             HAS_ZERO: tl.constexpr, GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    rmask = rows < M
    kmask = k < K
    if GATHER:
        src = tl.load(g_ptr + k, mask=kmask, other=C)
    else:
        src = k
    x = tl.load(x_ptr + rows[:, None] * stride_xm + src[None, :], mask=rmask[:, None] & (kmask & (src < C))[None, :],
                other=0.0).to(tl.float32)
    s = tl.load(s_ptr + rows, mask=rmask, other=1.0).to(tl.float32)
    inv = tl.math.div_rn(tl.full([BLOCK_R], 1.0, tl.float32), s)
    r = (x * inv[:, None] + 12582912.0) - 12582912.0
    if HAS_ZERO:
        r += tl.load(z_ptr + k, mask=kmask, other=0.0).to(tl.float32)[None, :]
    r = tl.minimum(tl.maximum(r, -qmax - 1.0), qmax * 1.0)
    tl.store(q_ptr + rows[:, None] * stride_qm + k[None, :], r.to(tl.int8), mask=rmask[:, None] & kmask[None, :])


def old(x, step, qmax, zero, gather):
    M, C = x.shape
    K = gather.shape[0]
    q = torch.empty(M, K, dtype=torch.int8, device=x.device)
    s_in = step.expand(M).contiguous()
    cfg = quant_act.STATIC_CONFIG
    _quant_static_rows_first[(triton.cdiv(M, cfg["BLOCK_R"]), triton.cdiv(K, cfg["BLOCK_K"]))](
        x, s_in, zero, gather, q, M, K, C, x.stride(0), q.stride(0), qmax, HAS_ZERO=True, GATHER=True, **cfg)
    return q


def tile(x, step, qmax, zero, gather):
    M, C = x.shape
    K = gather.shape[0]
    q = torch.empty(M, K, dtype=torch.int8, device=x.device)
    s_in = step.expand(M).contiguous()
    cfg = quant_act.STATIC_CONFIG
    quant_act._quant_static[(triton.cdiv(K, cfg["BLOCK_K"]) * triton.cdiv(M, cfg["BLOCK_R"]),)](
        x, s_in, zero, gather, q, M, K, C, x.stride(0), q.stride(0), qmax, HAS_ZERO=True, GATHER=True, **cfg)
    return q


print(torch.cuda.get_device_name())
for M, C in ((4096, 4096), (4096, 14336), (512, 14336), (16, 4096)):
    x = torch.randn(M, C, device="cuda", dtype=torch.bfloat16)
    gather = torch.randperm(C, device="cuda").to(torch.int32)
    zero = torch.randint(-8, 8, (C,), device="cuda").float()
    step = torch.ones(1, device="cuda")
    ref, _ = ref8.quantize_activation_int8_ref(x, step, 7, zero, gather)
    new_q, _ = quant_act.run_quantize(x, step, 7, zero, gather)
    assert torch.equal(old(x, step, 7, zero, gather), ref) and torch.equal(new_q, ref)
    assert torch.equal(tile(x, step, 7, zero, gather), ref)
    t_old = graph_time_us([lambda: old(x, step, 7, zero, gather)])
    t_tile = graph_time_us([lambda: tile(x, step, 7, zero, gather)])
    t_new = graph_time_us([lambda: quant_act.run_quantize(x, step, 7, zero, gather)])
    t_copy = graph_time_us([lambda: x.clone()])  # a read + write of x: the bandwidth yardstick
    gbytes = (M * C * 3) / 1e9
    print(f"M={M:5d} C={C:5d}: tile rows-first {t_old:8.1f} us | tile cols-first {t_tile:8.1f} | row gather "
          f"{t_new:8.1f} us ({t_old / t_new:.1f}x) | "
          f"{gbytes / (t_new * 1e-6):.0f} GB/s | x.clone() {t_copy:.1f} us", flush=True)
