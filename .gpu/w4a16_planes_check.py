"""W4A16 decode batches after the nibble-plane dispatch: shipped (PLANES at <= 16 rows where the group allows) vs
the same bucket interleaved (PLANES off) vs cuBLAS bf16, and the shipped output against the reference; bf16 g128
and asymmetric g128 + bias, Llama-3-8B shapes, CUDA-graph timing over rotating weight copies."""
import json, os, sys
from pathlib import Path
import torch
import torch.nn.functional as F
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from qpass.kernels import formats as fmt
from qpass.kernels.int4 import reference as ref4, tc as k_tc, w4a16 as k_w4a16
from qpass.kernels.tiling import pick
from cuda_timing import graph_time_us

SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
ROT = 256 << 20


def main():
    gpu = torch.cuda.get_device_name()
    print(gpu, torch.__version__, flush=True)
    rows, sums = [], {}
    for N, K in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(N + K)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
        for sym in (True, False)[:int(os.environ.get("FORMS", "2"))]:
            q, s, z = fmt.quantize_int4(w, 128, symmetric=sym)
            p, s16 = fmt.pack_int4(q), s.to(torch.bfloat16)
            z16 = None if sym else z.to(torch.bfloat16)
            b = None if sym else torch.randn(N, device="cuda", dtype=torch.bfloat16)
            n4 = max(2, min(48, -(-ROT // (N * K // 2))))
            ps = [(p, s16)] + [(p.clone(), s16.clone()) for _ in range(n4 - 1)]
            ws = [w] + [w.clone() for _ in range(max(2, min(48, -(-ROT // (N * K * 2)))) - 1)] if sym else None
            for M in [int(m) for m in os.environ.get("MS", "2,4,8,16,32").split(",")]:
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
                yr = ref4.w4a16_linear_ref(x, p, s16, z16, b, 128).float()
                y = k_w4a16.w4a16_linear_triton(x, p, s16, z16, b, 128).float()
                err = ((y - yr).norm() / yr.norm()).item()
                cfg = dict(pick(k_tc.TC_CONFIGS, M), PLANES=False)
                sh = graph_time_us([lambda pp=pp, ss=ss: k_w4a16.w4a16_linear_triton(x, pp, ss, z16, b, 128)
                                    for pp, ss in ps])
                il = graph_time_us([lambda pp=pp, ss=ss: k_w4a16.w4a16_linear_triton(x, pp, ss, z16, b, 128, config=cfg,
                                                                                     kernel="tc") for pp, ss in ps])
                bf = graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in ws]) if sym else float("nan")
                cp = dict(pick(k_tc.TC_CONFIGS, M), PLANES=True)  # the plane step forced on this bucket
                pl = graph_time_us([lambda pp=pp, ss=ss: k_w4a16.w4a16_linear_triton(x, pp, ss, z16, b, 128, config=cp,
                                                                                     kernel="tc") for pp, ss in ps])
                yp = k_w4a16.w4a16_linear_triton(x, p, s16, z16, b, 128, config=cp, kernel="tc").float()
                assert ((yp - yr).norm() / yr.norm()).item() < 1e-2
                r = dict(N=N, K=K, M=M, sym=sym, bf16=round(bf, 2), shipped=round(sh, 2), interleaved=round(il, 2),
                         planes=round(pl, 2), rel_err=err)
                rows.append(r)
                key = (M, sym)
                sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
                sums[key] = [a + v for a, v in zip(sums[key], (bf, sh, il, pl))]
                print(f"N={N:5d} K={K:5d} M={M:2d} {'sym ' if sym else 'asym'}: bf16 {bf:6.1f}  shipped {sh:6.1f}  "
                      f"interleaved {il:6.1f}  planes {pl:6.1f}  err {err:.1e}", flush=True)
                assert err < 1e-2, err
            del ps, ws
    for (M, sym), (bf, sh, il, pl) in sorted(sums.items()):
        print(f"layer M={M:2d} {'sym ' if sym else 'asym'}: bf16 {bf:6.1f}  shipped {sh:6.1f}  interleaved {il:6.1f}  "
              f"planes {pl:6.1f}")
    Path(os.environ.get("OUT", "/tmp"), os.environ.get("NAME", "w4a16_planes_check") + ".json").write_text(
        json.dumps(dict(gpu=gpu, torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
