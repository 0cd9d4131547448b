"""Host-side cost of one call (GPU): where the CPU time of an uncaptured qpass forward goes.

Each line runs the call 500 times back to back (after warm-up) and reports wall µs per call. The shapes are
small (the GPU finishes each kernel sooner than the host can launch the next), so the figure is launch
overhead. Compares a bare Triton launch, the qpass kernels' Python entry points and their torch.library ops with
ATen's F.linear. docs/benchmarks.md "End to end" (prompt prefill) uses it.

    python benchmarks/launch_overhead.py
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import gemm  # noqa: F401  (puts the checkout's qpass on sys.path)
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int4.dequant import dequantize_int4_triton  # noqa: E402
from qpass.kernels.int4.gemv import w4a16_gemv4  # noqa: E402
from qpass.kernels.int4.w4a16 import w4a16_linear_triton  # noqa: E402


@triton.jit
def _noop(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


def per_call_us(fn, n=500) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main():
    N = K = 1024
    q, s, _ = fmt.quantize_int4(torch.randn(N, K, device="cuda"), 128, True)
    p = fmt.pack_int4(q)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    buf = torch.zeros(1024, device="cuda")
    rows = []
    for M in (1, 512):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        cases = {
            "triton no-op launch": lambda: _noop[(1,)](buf, 1024, BLOCK=1024),
            "F.linear (ATen, bf16)": lambda: F.linear(x, w),
            "torch.ops.qpass.w4a16_linear": lambda: torch.ops.qpass.w4a16_linear(x, p, s, None, None, 128),
            "w4a16_linear_triton (no op dispatch)": lambda: w4a16_linear_triton(x, p, s, None, None, 128),
        }
        if M == 1:
            cases["w4a16_gemv4 (launcher only)"] = lambda: w4a16_gemv4(x, p, s, None, None, 128, y)
        else:
            cases["dequantize_int4_triton"] = lambda: dequantize_int4_triton(p, s, None, 128, K, x.dtype)
        for name, fn in cases.items():
            rows.append((M, name, per_call_us(fn)))
            print(f"M={M:<4} {name:<40} {rows[-1][2]:8.1f} µs per call", flush=True)


if __name__ == "__main__":
    main()
