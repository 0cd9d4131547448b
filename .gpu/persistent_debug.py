"""Which persistent-int8 case faults on hardware: each case in its own process (a fault poisons the context), with
CUDA_LAUNCH_BLOCKING=1; prints one line per case."""
import os
import subprocess
import sys

CASES = {
    "persistent 2048 plain": "y = P.int8_mm_persistent(x(2048), w, ws, None, None, bf)",
    "persistent 2048 xs": "y = P.int8_mm_persistent(x(2048), w, ws, xs(2048), None, bf)",
    "persistent 2048 bias": "y = P.int8_mm_persistent(x(2048), w, ws, None, b, bf)",
    "persistent 2100 plain": "y = P.int8_mm_persistent(x(2100), w, ws, None, None, bf)",
    "persistent 2100 xs bias": "y = P.int8_mm_persistent(x(2100), w, ws, xs(2100), b, bf)",
    "tile 512 bias": "y = G.int_mm(x(512), w, ws, xs(512), b, bf, False)",
    "op int8 2100 xs bias": "y = torch.ops.qpass.int8_linear(x(2100), w, ws, xs(2100), b, bf)",
}
PRE = """
import torch
from qpass.kernels import ops as _o
from qpass.kernels.int8 import persistent as P, gemm as G, reference as R
torch.manual_seed(0)
dev, bf, N, K = "cuda", torch.bfloat16, 4096, 4096
w = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
ws = torch.rand(N, device=dev) * 1e-3 + 1e-4
b = torch.randn(N, device=dev, dtype=bf)
x = lambda M: torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
xs = lambda M: torch.rand(M, device=dev) * 1e-2
"""
if len(sys.argv) > 1:
    exec(PRE + CASES[sys.argv[1]] + "\ntorch.cuda.synchronize()\nprint('ran', tuple(y.shape), float(y.float().abs().mean()))")
    sys.exit(0)
for name in CASES:
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1")
    r = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True, text=True, timeout=120)
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if "Error" in ln or "error" in ln][-2:]
    print(f"{name:<28} rc {r.returncode} {r.stdout.strip()[-80:]} {' | '.join(err)[:300]}", flush=True)
