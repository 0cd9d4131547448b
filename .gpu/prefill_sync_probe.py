"""Why the 4K no-cache prefill of w4a8-qsm (8 layers) takes ~5 ms longer than its summed kernel time: wall vs CUDA
events vs host enqueue time, synchronizing calls (torch.cuda sync debug mode, with the Python stack), CPU profile."""
import statistics
import sys
import time
import traceback
import warnings

import torch

sys.argv = sys.argv[:1]
from benchmarks.e2e import build, forward, llama3_8b_config, qsm_recipe, sync  # noqa: E402
import qpass  # noqa: E402

cfg = llama3_8b_config(8)
base = build(cfg, "cuda")
g = torch.Generator(device="cuda").manual_seed(2)
calib = [torch.randint(0, cfg.vocab_size, (1, 256), device="cuda", generator=g) for _ in range(4)]
model = qpass.compile(base, qsm_recipe("w4a8-qsm"), calib, progress=False, copy=True, compiler="inductor")
long = torch.randint(0, cfg.vocab_size, (1, 4096), device="cuda", generator=g)
stacks = []


def record(message, category, filename, lineno, file=None, line=None):
    stacks.append((str(message)[:160], "".join(traceback.format_stack(limit=14)[:-1])))


with torch.no_grad():
    for n in (4096, 512):
        ids = long[:, :n]
        for _ in range(3):
            forward(model, ids)
        sync()
        walls, events, hosts = [], [], []
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync()
            t = time.perf_counter()
            s.record()
            forward(model, ids)
            e.record()
            hosts.append(1e3 * (time.perf_counter() - t))
            sync()
            walls.append(1e3 * (time.perf_counter() - t))
            events.append(s.elapsed_time(e))
        print(f"{n} tokens: wall {statistics.median(walls):.2f} ms, events {statistics.median(events):.2f}, "
              f"host enqueue {statistics.median(hosts):.2f}  (all walls {[round(w, 2) for w in walls]})", flush=True)
        stacks.clear()
        old = warnings.showwarning
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            forward(model, ids)
        torch.cuda.set_sync_debug_mode(0)
        warnings.showwarning = old
        sync()
        print(f"{n} tokens: {len(stacks)} synchronizing calls", flush=True)
        for msg, st in stacks[:3]:
            print(msg, "\n", st[-2500:], flush=True)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        forward(model, long)
        sync()
    rows = prof.key_averages()
    print(rows.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
    for r in rows:
        if any(w in r.key for w in ("ynchron", "item", "local_scalar", "Memcpy", "is_nonzero")):
            print("SYNC-LIKE", r.key, r.count, f"{r.self_cpu_time_total:.0f} us")
