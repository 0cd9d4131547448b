"""GPU time per call of a function replayed in a CUDA graph (the .gpu probes' timer): what a captured decode step
pays per kernel, with no host time in it. Imported by the probes (`python .gpu/<probe>.py` puts .gpu on sys.path)."""
import torch


def graph_us(fn, calls=20, replays=30):
    """GPU µs per call: `calls` calls captured in one CUDA graph, replayed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(replays):
            g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / (calls * replays))
    return min(times)
