"""Issue 18: integer group steps (each group's step = row step x u, u <= 8/16): the tiled W4A8 kernel accumulating
over all of K (INT_STEPS), the int8 GEMM on a pre-unpacked (w - z) * u weight, beside bf16 and today's paths."""
import json, math, os, sys
os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch, torch.nn.functional as F
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int8 import gemm, reference as ref8
from qpass.kernels.int8.dequant_mm import dequant_mm
from qpass.kernels.int4.dequant import dequantize_int4_triton

out = sys.argv[1]
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]
MS = [16, 64, 256, 1024, 4096]
CANDS = {16: [(16, 64, 64, 8, 4, 4), (16, 128, 64, 8, 4, 4), (16, 32, 64, 8, 4, 4), (32, 64, 64, 8, 4, 4)],
         64: [(64, 64, 64, 8, 4, 4), (64, 128, 64, 8, 4, 4), (32, 64, 64, 8, 4, 4)],
         "big": [(128, 128, 64, 8, 4, 4), (128, 128, 64, 8, 8, 4), (128, 256, 64, 8, 8, 3), (256, 128, 64, 8, 8, 3),
                 (64, 128, 64, 8, 4, 4), (128, 128, 64, 8, 4, 3)]}
G = 64
torch.manual_seed(0)
rows, lines = [], []
name = torch.cuda.get_device_name(); print(name, flush=True)
for fmt_name in ("w4a8-qsm", "w4a4-qsm"):
    for N, K in SHAPES:
        copies = max(1, math.ceil((256 << 20) / (N * K)))
        asym = fmt_name == "w4a8-qsm"
        U = 8 if asym else 16
        step = [torch.rand(N, device="cuda") * 1e-3 + 1e-4 for _ in range(copies)]
        u = [torch.randint(1, U + 1, (N, K // G), device="cuda").float() for _ in range(copies)]
        ws = [s[:, None] * uu for s, uu in zip(step, u)]
        if asym:
            codes = [torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int8) for _ in range(copies)]
            wz = [torch.randint(4, 12, (N, K // G), device="cuda").float() for _ in range(copies)]
            xlo, xhi = -128, 128
        else:
            codes = [torch.randint(-8, 8, (N, K), device="cuda", dtype=torch.int8) for _ in range(copies)]
            wz = [None] * copies
            xlo, xhi = 0, 16
        packed = [fmt.pack_int4(c) for c in codes]
        w8 = [((c.float() - (z.repeat_interleave(G, 1) if z is not None else 0)) * uu.repeat_interleave(G, 1)).to(torch.int8)
              for c, z, uu in zip(codes, wz, u)]
        wbf = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(min(copies, 4))]
        for M in MS:
            xi = torch.randint(xlo, xhi, (M, K), device="cuda", dtype=torch.int8)
            xz = torch.randint(xlo, xhi, (K,), device="cuda").float()
            xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            ref = ref8.w4a8_linear_ref(xi, packed[0], ws[0], None, None, torch.float32, G, xz, wz[0])
            rec = dict(fmt=fmt_name, M=M, N=N, K=K)
            def t(fns):
                return graph_time_us(fns, reps=10)
            rec["bf16"] = t([lambda w=w: F.linear(xb, w) for w in wbf])
            if M >= 64:
                rec["dequant"] = t([lambda i=i: dequant_mm(xi, packed[i], ws[i], None, None, torch.bfloat16, G, xz, True, wz[i]) for i in range(copies)])
            e = (gemm.int_mm(xi, w8[0], step[0], None, None, torch.float32, False, None, 0, xz) - ref).norm() / ref.norm()
            rec["int8_rowstep_xz"] = t([lambda i=i: gemm.int_mm(xi, w8[i], step[i], None, None, torch.bfloat16, False, None, 0, xz) for i in range(copies)])
            rec["int8_rowstep"] = t([lambda i=i: gemm.int_mm(xi, w8[i], step[i], None, None, torch.bfloat16, False) for i in range(copies)])
            rec["unpack_pass"] = t([lambda i=i: dequantize_int4_triton(packed[i], None, wz[i], -1, K, torch.int8, int_out=True) for i in range(copies)])
            rec["int8_err"] = e.item()
            best = None
            for bm, bn, bk, gm, nw, st in CANDS.get(M, CANDS["big"]):
                cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=nw, num_stages=st, UNPACK=0)
                f = lambda i, c=cfg: gemm.int_mm(xi, packed[i], ws[i], None, None, torch.bfloat16, True, c, G, xz, wz[i], w_step=step[i])
                try:
                    err = ((f(0).float() - ref).norm() / ref.norm()).item()
                    us = t([lambda i=i: f(i) for i in range(copies)])
                except Exception as ex:  # noqa: BLE001
                    print("FAIL", fmt_name, M, N, K, cfg, type(ex).__name__, str(ex)[:200], flush=True); continue
                rows.append(dict(rec, kernel="int_steps", cfg=cfg, us=us, rel_err=err))
                if best is None or us < best[0]:
                    best = (us, cfg, err)
            if best:
                rec["int_steps"], rec["int_steps_cfg"], rec["int_steps_err"] = best
            rows.append(dict(rec, kernel="summary"))
            b = rec["bf16"]
            line = (f"{fmt_name} M={M:5d} {N:5d}x{K:5d}: bf16 {b:7.1f} | deq {rec.get('dequant', float('nan')):7.1f} | "
                    f"intsteps {rec.get('int_steps', float('nan')):7.1f} ({b / rec.get('int_steps', float('nan')):.2f}x) | "
                    f"unpack {rec['unpack_pass']:6.1f} + i8xz {rec['int8_rowstep_xz']:7.1f} ({b / (rec['unpack_pass'] + rec['int8_rowstep_xz']):.2f}x) "
                    f"i8 {rec['int8_rowstep']:7.1f} | err {rec.get('int_steps_err', float('nan')):.0e}/{rec['int8_err']:.0e} "
                    f"{tuple(rec.get('int_steps_cfg', {}).values())[:6]}")
            print(line, flush=True); lines.append(line)
            json.dump(dict(gpu=name, rows=rows), open(out, "w"), indent=1)
print("\n".join(lines))
