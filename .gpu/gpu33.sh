# issue 20 (short): bf16 W4A16 tile, float unpack vs int unpack, checked against the reference, two shapes
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python - <<'PY' 2>&1 | grep -v -i warn
import sys; sys.path.insert(0, "benchmarks")
import torch, torch.nn.functional as F
from cuda_timing import graph_time_us
from qpass.kernels import formats as fmt
from qpass.kernels.int4 import reference as ref4, tc as k_tc, w4a16 as k_w4a16
from qpass.kernels.tiling import pick
for N, K in [(4096, 4096), (4096, 14336)]:
    g = torch.Generator(device="cuda").manual_seed(N + K)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    for hz in (False, True):
        q, s, z = fmt.quantize_int4(w, 128, symmetric=not hz)
        p, s16 = fmt.pack_int4(q), s.to(torch.bfloat16)
        z16 = z.to(torch.bfloat16) if z is not None else None
        ps = [(p, s16)] + [(p.clone(), s16.clone()) for _ in range(max(2, (256 << 20) // p.numel()) - 1)]
        for M in (16, 64, 128, 256):
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            yr = ref4.w4a16_linear_ref(x, p, s16, z16, None, 128).float()
            line = [f"{N}x{K} zero={hz} M={M:4d}"]
            for fu in (True, False):
                c = dict(pick(k_tc.TC_CONFIGS, M), FLOAT_UNPACK=fu)
                f = lambda pp, ss: k_w4a16.w4a16_linear_triton(x, pp, ss, z16, None, 128, config=c, kernel="tc")
                err = ((f(p, s16).float() - yr).norm() / yr.norm()).item()
                us = graph_time_us([lambda pp=pp, ss=ss: f(pp, ss) for pp, ss in ps]) if not hz else float("nan")
                line.append(f"{'float' if fu else 'int'} {us:6.1f} us err {err:.1e}")
            if not hz:
                wb = [w] + [w.clone() for _ in range(3)]
                line.append(f"bf16 {graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in wb]):6.1f} us")
            print("  ".join(line), flush=True)
PY
