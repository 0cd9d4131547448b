"""Our host Python per eager op call, measured without a GPU: every qpass op at M = 1 through its CUDA path
(dispatcher, per-signature plan, kernels/launch.py) with only Triton's driver launcher replaced by a no-op.

What this times is the part of benchmarks/launch_overhead.py's figure that is qpass's own code, on any machine;
the driver launch itself (≈ 8–10 µs on an H100 host for a 20-argument kernel, measured there as "bare Triton
launch") and CUDA's allocator are not in it. To reach the CUDA path on CPU tensors the script makes
`Tensor.is_cuda` answer True and gives kernels/launch.py a stand-in driver (device 0, stream 0) and a stand-in
compiled kernel; run it with TRITON_INTERPRET unset (the kernels must be JIT functions, never run here).

    python benchmarks/host_python.py                # table: µs per call, the fastest of 9 runs of 3,000 calls
    python benchmarks/host_python.py --profile w4a16
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import types

import torch

import gemm  # noqa: F401  (puts the checkout's qpass on sys.path)

if os.environ.get("TRITON_INTERPRET", "0") != "0":
    raise SystemExit("host_python.py: unset TRITON_INTERPRET (it times the compiled kernels' launch path)")

import triton.runtime.jit as jit  # noqa: E402

from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels import launch as L  # noqa: E402
from qpass.kernels import ops as qk  # noqa: E402,F401  (registers the qpass:: ops)

N = K = 4096


class _Compiled:
    """A compiled kernel whose driver launch does nothing."""
    function, packed_metadata = 0, None

    def run(self, *args):
        pass

    def launch_metadata(self, grid, stream, *args):
        return None


def stub_the_driver():
    L._DEVICE_STREAM = (lambda: 0, lambda device: 0)
    jit.JITFunction.run = lambda self, *args, **kwargs: _Compiled()  # Triton's own (first-call) path
    torch.Tensor.is_cuda = property(lambda self: True)  # every op takes its CUDA path on these CPU tensors


def cases() -> dict:
    """name -> zero-argument call at M = 1, Llama-3-8B's 4096 x 4096 (as benchmarks/launch_overhead.py)."""
    bf = torch.bfloat16
    x = torch.randn(1, 1, K, dtype=bf)
    q4, s4, _ = fmt.quantize_int4(torch.randn(N, K) * 0.02, 64, True)
    p4, s4 = fmt.pack_int4(q4), s4.to(bf)
    t1, t2 = (fmt.pack_trits(torch.randint(-1, 2, (N, K))) for _ in range(2))
    a = torch.rand(N, K // 64)
    x8, xs = torch.randint(-127, 128, (1, K), dtype=torch.int8), torch.rand(1)
    q8, ws = torch.randint(-127, 128, (N, K), dtype=torch.int8), torch.rand(N)
    step = torch.rand(1) * 1e-2 + 1e-3
    q, kv = torch.randn(1, 32, 1, 128, dtype=bf), torch.randn(1, 8, 2048, 128, dtype=bf)
    mask = torch.ones(1, 1, 1, 2048, dtype=torch.bool)
    x16, x8_128 = torch.randn(1, 16, K, dtype=bf), torch.randint(-127, 128, (1, 128, K), dtype=torch.int8)
    xs_128 = torch.rand(1, 128, 1)
    row_step = torch.rand(N) * 1e-3 + 1e-4  # integer group steps (QSM): each group's step u * the row's
    a_int, zeros = row_step[:, None] * torch.randint(1, 4, (N, K // 64)), torch.randint(0, 16, (N, K // 64)).float()
    ops = torch.ops.qpass  # the overloads (.default) are what lowered graphs call; the packet adds a Python frame
    return {
        "torch.empty (allocation alone)": lambda: torch.empty(1, 1, N, dtype=bf),
        "qpass::w4a16_linear (g64)": lambda: ops.w4a16_linear.default(x, p4, s4, None, None, 64),
        "qpass::ternary_linear (g64)": lambda: ops.ternary_linear.default(x, t1, t2, a, a, None, 64),
        "qpass::w4a8_linear (g64)": lambda: ops.w4a8_linear.default(x8, p4, a, xs, None, bf, 64),
        "qpass::int8_linear (per-row)": lambda: ops.int8_linear.default(x8, q8, ws, xs, None, bf),
        "qpass::quantize_activation_int8 (dynamic)": lambda: ops.quantize_activation_int8.default(x, None, 127),
        "qpass::quantize_activation_int8 (static)": lambda: ops.quantize_activation_int8.default(x, step, 127),
        # prompt / batch rows: their ATen epilogue ops (split-K's zeroed buffer and bias add) run on the CPU here
        "qpass::w4a16_linear (g64, 16 rows: split-K tile)": lambda: ops.w4a16_linear.default(x16, p4, s4, None, None,
                                                                                               64),
        "qpass::w4a8_linear (g64 integer steps, 128 rows)":
            lambda: ops.w4a8_linear.default(x8_128, p4, a_int, xs_128, None, bf, 64, None, zeros,
                                            row_step),
        "qpass::attention (decode, 2K keys, bool mask)":
            lambda: ops.attention.default(q, kv, kv, mask, False, None, True),
    }


def per_call_us(fn, n=3000, repeats=9) -> float:
    """The fastest of `repeats` runs of `n` calls, µs per call (host timings on a shared machine only err upward)."""
    for _ in range(100):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", help="a substring of one case's name: print its cProfile")
    args = ap.parse_args()
    stub_the_driver()
    torch.set_grad_enabled(False)  # as in model.generate
    table = cases()
    if args.profile:
        name, fn = next((n, f) for n, f in table.items() if args.profile in n)
        per_call_us(fn, 100, 1)
        prof = cProfile.Profile()
        prof.enable()
        per_call_us(fn, 3000, 1)
        prof.disable()
        print(f"cProfile of {name}:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return
    for name, fn in table.items():
        print(f"{name:<45} {per_call_us(fn):7.1f} µs per call", flush=True)


if __name__ == "__main__":
    main()
