"""Experiment (not shipped): non-persistent W4A16 GEMV variants vs the shipped gemv4 and tinygemm, M = 1.

flat:  grid = row blocks; each program loads its rows' whole K at once (loads issued before x is prepared) —
       occupancy, not a register double buffer, hides the latency.
kloop: grid = row blocks; K in BLOCK_KW chunks through tl.range(num_stages=S) (the pipeliner may prefetch).
"""
import math
import os
import sys
import time

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
if torch.cuda.is_available():
    import gemm  # noqa: F401,E402  (qpass from the checkout; sets TRITON_INTERPRET=0)
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4 import gemv as G  # noqa: E402
from qpass.kernels.int4.reference import w4a16_linear_ref  # noqa: E402
from qpass.kernels import ops as qk  # noqa: E402,F401

_XOR8 = tl.constexpr(-2004318072)


@triton.jit
def gemv_flat(x_ptr, w_ptr, s_ptr, y_ptr, N, K, KW, NG, GW: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_KW: tl.constexpr):
    NV: tl.constexpr = BLOCK_KW // 4
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    wv = tl.arange(0, NV)
    widx = (wv[:, None] * 4 + tl.arange(0, 4)[None, :])[None, :, :]
    words = tl.load(w_ptr + offs_n[:, None, None] * KW + widx, mask=n_mask[:, None, None] & (widx < KW), other=0)
    g = (wv * 4) // GW
    s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=n_mask[:, None] & (wv * 4 < KW)[None, :], other=0.0)
    x0, x1, x2, x3, x4, x5, x6, x7, c, xs = G._xprep(x_ptr, widx, K, False)
    p = tl.sum(G._wdot(words ^ _XOR8, x0, x1, x2, x3, x4, x5, x6, x7, c), axis=2)
    y = tl.sum(s.to(tl.float32) * p, axis=1)
    tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def gemv_kloop(x_ptr, w_ptr, s_ptr, y_ptr, N, K, KW, NG, GW: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_KW: tl.constexpr, STAGES: tl.constexpr):
    NV: tl.constexpr = BLOCK_KW // 4
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    wv = tl.arange(0, NV)
    widx0 = (wv[:, None] * 4 + tl.arange(0, 4)[None, :])[None, :, :]
    acc = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    for kw0 in tl.range(0, KW, BLOCK_KW, num_stages=STAGES):
        widx = kw0 + widx0
        words = tl.load(w_ptr + offs_n[:, None, None] * KW + widx, mask=n_mask[:, None, None] & (widx < KW), other=0)
        g = (kw0 + wv * 4) // GW
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=n_mask[:, None] & (kw0 + wv * 4 < KW)[None, :],
                    other=0.0)
        x0, x1, x2, x3, x4, x5, x6, x7, c, xs = G._xprep(x_ptr, widx, K, False)
        p = tl.sum(G._wdot(words ^ _XOR8, x0, x1, x2, x3, x4, x5, x6, x7, c), axis=2)
        acc += s.to(tl.float32) * p
    y = tl.sum(acc, axis=1)
    tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask)


def run_flat(x, p, s, y, bn, nw):
    words = fmt.as_words(p)
    N, KW = words.shape
    K = x.shape[1]
    bkw = max(16, triton.next_power_of_2(KW))
    return gemv_flat[(triton.cdiv(N, bn),)](x, words, s, y, N, K, KW, s.shape[1], GW=16, BLOCK_N=bn, BLOCK_KW=bkw,
                                             num_warps=nw)


def run_kloop(x, p, s, y, bn, bkw, nw, st):
    words = fmt.as_words(p)
    N, KW = words.shape
    K = x.shape[1]
    return gemv_kloop[(triton.cdiv(N, bn),)](x, words, s, y, N, K, KW, s.shape[1], GW=16, BLOCK_N=bn, BLOCK_KW=bkw,
                                              STAGES=st, num_warps=nw)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    shapes = [(6144, 4096), (28672, 4096), (4096, 4096), (4096, 14336)] if cuda else [(40, 512), (7, 1536)]
    if cuda:
        from cuda_timing import graph_time_us
    flat_cfgs = [(bn, nw) for bn in (1, 2, 4, 8) for nw in (2, 4, 8)]
    kloop_cfgs = [(bn, bkw, nw, 3) for bn in (4, 8) for bkw in (128, 256) for nw in (2, 4)]
    if not cuda:
        flat_cfgs, kloop_cfgs = [(2, 2), (4, 4)], [(4, 64, 2, 1), (8, 128, 4, 3)]
    if "--quick" in sys.argv:  # the shipped kernels only: W4A16 op, tinygemm, ternary gemv4 / gemv2
        flat_cfgs, kloop_cfgs = [], []
    table = []
    for N, K in shapes:
        torch.manual_seed(0)
        w = torch.randn(N, K, device=dev) * 0.02
        q, s, _ = fmt.quantize_int4(w, 128, symmetric=True)
        p = fmt.pack_int4(q)
        s = s.float()  # what the lowering stores
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16 if cuda else torch.float16)
        yr = w4a16_linear_ref(x.float(), p, s, None, None, 128)
        nbytes = p.numel() + s.numel() * 4
        ncopy = max(1, math.ceil((256 << 20) / nbytes)) if cuda else 1
        ps = [p] + [p.clone() for _ in range(ncopy - 1)]
        y = torch.empty(1, N, device=dev, dtype=x.dtype)

        def timed(tag, fn):
            try:
                out = fn(p)
                e = rel(out, yr)
                assert e < 1e-2, e
                us = graph_time_us([lambda pi=pi: fn(pi) for pi in ps]) if cuda else float("nan")
                table.append((N, K, tag, us, nbytes / us / 1e6 if cuda else 0, e))
                print(f"{N}x{K} {tag:40s} {us:8.2f} us {nbytes / us / 1e6 if cuda else 0:5.2f} TB/s err {e:.1e}",
                      flush=True)
            except Exception as ex:  # noqa: BLE001
                print(f"{N}x{K} {tag} FAIL {type(ex).__name__} {str(ex)[:200]}", flush=True)

        timed("shipped op", lambda pi: qk.w4a16_linear(x, pi, s, None, None, 128))
        if cuda:
            u = (q.to(torch.int32) + 8)
            tp = torch.ops.aten._convert_weight_to_int4pack(((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8), 8)
            sz = torch.stack([s.t(), torch.zeros_like(s.t())], dim=-1).to(torch.bfloat16).contiguous()
            tps = [tp] + [tp.clone() for _ in range(ncopy - 1)]
            tg = {id(a): b for a, b in zip(ps, tps)}
            timed("tinygemm", lambda pi: torch.ops.aten._weight_int4pack_mm(x, tg[id(pi)], 128, sz))
            del tps, tg
        for bn, nw in flat_cfgs:
            timed(f"flat bn={bn} nw={nw}", lambda pi: (run_flat(x, pi, s, y, bn, nw), y)[1])
        for bn, bkw, nw, st in kloop_cfgs:
            timed(f"kloop bn={bn} bkw={bkw} nw={nw} st={st}", lambda pi: (run_kloop(x, pi, s, y, bn, bkw, nw, st), y)[1])
        del ps
        # ternary planes at this shape: the dispatch (gemv4 now) vs the previous M = 1 kernel (gemv2)
        from qpass.kernels.ternary.ternary import ternary_linear_triton
        t1, t2, a1, a2 = fmt.quantize_ternary(w, 128)
        P1, P2 = fmt.pack_trits(t1), fmt.pack_trits(t2)
        a1, a2 = a1.float(), a2.float()
        yt = (x.float() @ fmt.dequantize_ternary(t1, t2, a1, a2, 128).t())
        tb = P1.numel() * 2 + a1.numel() * 8
        tcopy = max(1, math.ceil((256 << 20) / tb)) if cuda else 1
        pairs = [(P1, P2)] + [(P1.clone(), P2.clone()) for _ in range(tcopy - 1)]
        for kern in ("gemv4", "gemv2"):
            try:
                out = ternary_linear_triton(x, P1, P2, a1, a2, None, 128, kernel=kern)
                e = rel(out, yt)
                us = graph_time_us([lambda q=q, kern=kern: ternary_linear_triton(x, q[0], q[1], a1, a2, None, 128,
                                                                                  kernel=kern) for q in pairs]) if cuda else float("nan")
                table.append((N, K, f"ternary {kern}", us, tb / us / 1e6, e))
                print(f"{N}x{K} ternary {kern:32s} {us:8.2f} us {tb / us / 1e6:5.2f} TB/s err {e:.1e}", flush=True)
            except Exception as ex:  # noqa: BLE001
                print(f"{N}x{K} ternary {kern} FAIL {type(ex).__name__} {str(ex)[:200]}", flush=True)
        del pairs
    print("\nbest per shape:")
    for N, K in shapes:
        rows = sorted([r for r in table if r[:2] == (N, K)], key=lambda r: r[3])
        ship = [r for r in rows if r[2] == "shipped op"]
        tg = [r for r in rows if r[2] == "tinygemm"]
        for r in rows[:4] + [r for r in rows[4:] if r[2] in ("shipped op", "tinygemm") or "ternary" in r[2]]:
            print(f"{N}x{K} {r[2]:40s} {r[3]:7.2f} us {r[4]:.2f} TB/s", end="")
            if ship:
                print(f"  vs shipped {ship[0][3] / r[3]:.2f}x", end="")
            if tg:
                print(f"  vs tinygemm {tg[0][3] / r[3]:.2f}x", end="")
            print()


if __name__ == "__main__":
    main()
