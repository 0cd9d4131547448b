"""Host-side cost of one eager call (GPU): the Python + dispatcher + launch time of every qpass op at M = 1.

Each row issues its call 1,000 times (after warm-up), in blocks of 200 with the GPU drained between blocks, and
reports the median over five such runs of the host µs per call: the time to issue the calls, which never waits for
the GPU (200 calls stay far below the driver's queue of pending launches). That is the host path — what plain
`model.generate` without CUDA graphs pays per op (issue 20: ≤ 20 µs per op), under no_grad as in `generate`. A
second column times the same calls back to back through a final synchronize (wall µs per call: the GPU's time
where a kernel takes longer than its host path). Each row also checks that a repeat call (the cached launch of
kernels/launch.py) returns exactly the first call's output (Triton's own launch path). Baselines in the same
process: ATen's F.linear and a bare Triton launch. Shapes: Llama-3-8B q_proj (4096 × 4096), bf16 activations.

    python benchmarks/launch_overhead.py                 # table; JSON with --json PATH
    python benchmarks/launch_overhead.py --profile w4a16  # cProfile of one op's calls (where the µs go)
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import gemm  # noqa: F401  (puts the checkout's qpass on sys.path)
from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels import ops as qk  # noqa: E402,F401  (registers the qpass:: ops)

N = K = 4096
CALLS = 1000
BLOCK_CALLS = 200  # calls issued between two drains of the GPU


@triton.jit
def _noop(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


def per_call_us(fn, n=CALLS, repeats=5, block=BLOCK_CALLS) -> tuple:
    """(host µs, wall µs) per call, each the median over `repeats` runs of `n` calls: host = the time to issue them
    in blocks of `block` (the GPU drained before each block, not timed), wall = back to back through a final
    synchronize."""
    for _ in range(20):
        fn()
    host, wall = [], []
    for _ in range(repeats):
        issued = 0.0
        for start in range(0, n, block):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(min(block, n - start)):
                fn()
            issued += time.perf_counter() - t
        host.append(issued / n * 1e6)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t) / n * 1e6)
    return sorted(host)[len(host) // 2], sorted(wall)[len(wall) // 2]


def same(a, b) -> bool:
    """Bitwise equal outputs (tensors or tuples of them)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a is None and b is None or all(same(x, y) for x, y in zip(a, b))


def cases(M: int = 1) -> dict:
    """name -> zero-argument call, every op at M rows on Llama-3-8B's 4096 x 4096."""
    dev, bf = "cuda", torch.bfloat16
    w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
    x = torch.randn(M, K, device=dev, dtype=bf)
    buf = torch.zeros(1024, device=dev)
    q4, s4, _ = fmt.quantize_int4(w.float(), 64, True)
    p4 = fmt.pack_int4(q4)
    q8 = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
    ws = torch.rand(N, device=dev) * 1e-3
    ws_g = torch.rand(N, K // 64, device=dev) * 1e-3
    x8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
    xs = torch.rand(M, device=dev) * 1e-2
    step = torch.rand(1, device=dev) * 1e-2 + 1e-3  # one static step (a slice made per call would time the slicing)
    t1 = fmt.pack_trits(torch.randint(-1, 2, (N, K), device=dev))
    t2 = fmt.pack_trits(torch.randint(-1, 2, (N, K), device=dev))
    a = torch.rand(N, K // 64, device=dev) * 1e-2
    q = torch.randn(1, 32, 1, 128, device=dev, dtype=bf)
    kv = torch.randn(1, 8, 2048, 128, device=dev, dtype=bf)
    x16, x8_128 = torch.randn(16, K, device=dev, dtype=bf), torch.randint(-127, 128, (128, K), device=dev,
                                                                              dtype=torch.int8)
    xs_128, row_step = torch.rand(128, device=dev) * 1e-2, torch.rand(N, device=dev) * 1e-3 + 1e-4
    ws_int = row_step[:, None] * torch.randint(1, 4, (N, K // 64), device=dev)  # integer group steps (QSM)
    wz = torch.randint(0, 16, (N, K // 64), device=dev).float()
    ops = torch.ops.qpass  # the overloads (.default) are what lowered graphs call; the packet adds a Python frame
    return {
        "triton no-op launch": lambda: _noop[(1,)](buf, 1024, BLOCK=1024) and None,
        "F.linear (ATen, bf16)": lambda: F.linear(x, w),
        "qpass::w4a16_linear (g64)": lambda: ops.w4a16_linear.default(x, p4, s4, None, None, 64),
        "qpass::ternary_linear (g64)": lambda: ops.ternary_linear.default(x, t1, t2, a, a, None, 64),
        "qpass::int8_linear (per-row)": lambda: ops.int8_linear.default(x8, q8, ws, xs, None, bf),
        "qpass::w4a8_linear (g64)": lambda: ops.w4a8_linear.default(x8, p4, ws_g, xs, None, bf, 64),
        "qpass::quantize_activation_int8 (dynamic)": lambda: ops.quantize_activation_int8.default(x, None, 127),
        "qpass::quantize_activation_int8 (static)": lambda: ops.quantize_activation_int8.default(x, step, 127),
        "qpass::attention (decode, 2K keys)": lambda: ops.attention.default(q, kv, kv, None, False, None, True),
        "F.scaled_dot_product_attention (decode)": lambda: F.scaled_dot_product_attention(q, kv, kv,
                                                                                          enable_gqa=True),
        # batch / prompt rows: the tile's and the unpack path's plans (their GPU time may exceed the host's: wall)
        "F.linear (ATen, bf16, 16 rows)": lambda: F.linear(x16, w),
        "qpass::w4a16_linear (g64, 16 rows: split-K tile)": lambda: ops.w4a16_linear.default(x16, p4, s4, None, None,
                                                                                               64),
        "qpass::w4a8_linear (g64 integer steps, 128 rows)":
            lambda: ops.w4a8_linear.default(x8_128, p4, ws_int, xs_128, None, bf, 64, None, wz, row_step),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--profile", help="a substring of one case's name: print its cProfile")
    args = ap.parse_args()
    table = cases()
    if args.profile:
        torch.set_grad_enabled(False)
        name, fn = next((n, f) for n, f in table.items() if args.profile in n)
        per_call_us(fn, 50)
        prof = cProfile.Profile()
        prof.enable()
        per_call_us(fn, CALLS)
        prof.disable()
        print(f"cProfile of {CALLS} calls of {name}:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    rows = []
    torch.set_grad_enabled(False)  # as in model.generate
    for name, fn in table.items():
        first = fn()  # Triton's own launch path (kernels/launch.py keeps the compiled kernel from here on)
        us, wall = per_call_us(fn)
        repeat = same(first, fn())
        rows.append(dict(case=name, us_per_call=round(us, 2), wall_us_per_call=round(wall, 2),
                         repeat_output_identical=repeat))
        print(f"{name:<50} host {us:7.1f} µs per call   wall {wall:7.1f}   repeat call's output identical to the "
              f"first: {repeat}", flush=True)
        if not repeat:
            raise SystemExit(f"{name}: a repeat call returned a different output than the first call")
    if args.json:
        meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                    calls=CALLS, M=1, N=N, K=K)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
