"""The CUDA-graph timer the GPU benchmarks share: launch overhead out, as in a captured decode step."""
from __future__ import annotations

import statistics

import torch


def graph_time_us(fns, reps: int = 20, warmup: int = 1) -> float:
    """Median µs per call of `fns` (e.g. one call per weight copy or per layer, so the working set exceeds L2)
    captured in order in one CUDA graph; `warmup` eager passes on a side stream first (Triton compiles,
    allocator pools)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            for f in fns:
                f()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / len(fns))
    del g
    return statistics.median(ts)
