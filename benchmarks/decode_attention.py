"""Decode attention (q_len = 1) on one GPU: what compiled HF runs vs qpass::attention, Llama-3-8B shapes
(32 query heads, 8 KV heads, d = 128, bf16), batch 1 and 8, a static cache of L slots whose last 10 % are not
written yet (bool mask [B, 1, 1, L], False there).

    python benchmarks/decode_attention.py [--batch 1 8] [--lens 768 4096 32768] [--out PATH.json]
    python benchmarks/decode_attention.py --check        # GPU correctness cases; exit 1 on a mismatch
    python benchmarks/decode_attention.py --dry-run [--check]   # the same logic on the CPU interpreter, tiny
    python benchmarks/decode_attention.py --sweep --out PATH.json  # + qpass over splits x key block (tuning)

Columns (µs per call): `sdpa_mask` = F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True) (what
compiled HF runs), `flash_prefix` = SDPA forced to flash attention, no mask, on the valid prefix only (a lower
bound reference), `qpass` = torch.ops.qpass.attention. Two timings each:
  * `graph`: one CUDA graph holding one call per "layer", each layer its own K/V (enough layers to exceed
    L2, up to 32, like the e2e decode step) -- the honest number for the e2e setting;
  * `bench`: triton.testing.do_bench (L2 flushed between calls, CPU launch overhead included).
Errors: max |qpass - sdpa_mask| and max |qpass - flash_prefix| (the same math: the mask only hides the tail).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch  # (does not import triton: --dry-run can still set TRITON_INTERPRET)
import torch.nn.functional as F

from cuda_timing import graph_time_us  # benchmarks/: the script's folder is on sys.path

H, HKV, D = 32, 8, 128
MASKED_TAIL = 0.1
L2_BYTES = 50 * 2 ** 20  # H100: 50 MB


def tail_mask(B, L, device):
    m = torch.ones(B, 1, 1, L, dtype=torch.bool, device=device)
    m[..., L - int(L * MASKED_TAIL):] = False
    return m


def qpass_attention(q, k, v, mask, is_causal=False, scale=None):
    """torch.ops.qpass.attention; on the CPU (dry run) the path the op takes on CUDA, run by the interpreter."""
    if q.is_cuda:
        return torch.ops.qpass.attention(q, k, v, mask, is_causal, scale, True)
    from qpass.kernels.attention import dense as ops
    return ops.run_path(ops.choose_path(q, k, v, mask, is_causal, True), q, k, v, mask, is_causal, scale, True)


FLASH = {"ok": True}  # set False (and reported) when this torch's flash kernel refuses the inputs


def flash_sdpa(q, k, v):
    """SDPA restricted to flash attention (math on the CPU); SDPA's own choice if flash refuses."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if FLASH["ok"]:
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION if q.is_cuda else SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        except RuntimeError as e:
            FLASH["ok"] = False
            print("flash attention refused, flash_prefix = SDPA's default backend:", str(e)[:200], flush=True)
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


# ------------------------------------------------------------------ timing
def time_bench(fn):
    if not torch.cuda.is_available():
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6
    import triton
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e3


def time_graph(fns, reps=20):
    """µs per call of a CUDA graph that runs fns (one per layer) in order."""
    if not torch.cuda.is_available():
        t = time.perf_counter()
        for f in fns:
            f()
        return (time.perf_counter() - t) * 1e6 / len(fns)
    return graph_time_us(fns, reps, warmup=2)


def bench_shape(B, L, dev, dt, sweep=False):
    kv_bytes = 2 * B * HKV * L * D * torch.finfo(dt).bits // 8
    layers = 1 if not torch.cuda.is_available() else max(4, min(32, math.ceil(2 * L2_BYTES / kv_bytes)))
    gen = torch.Generator(device=dev).manual_seed(0)
    qs = [torch.randn(B, H, 1, D, device=dev, dtype=dt, generator=gen) for _ in range(layers)]
    ks = [torch.randn(B, HKV, L, D, device=dev, dtype=dt, generator=gen) for _ in range(layers)]
    vs = [torch.randn(B, HKV, L, D, device=dev, dtype=dt, generator=gen) for _ in range(layers)]
    mask = tail_mask(B, L, dev)  # one mask for every layer, as in HF
    valid = L - int(L * MASKED_TAIL)
    variants = {
        "sdpa_mask": lambda i: F.scaled_dot_product_attention(qs[i], ks[i], vs[i], mask, enable_gqa=True),
        "flash_prefix": lambda i: flash_sdpa(qs[i], ks[i][:, :, :valid], vs[i][:, :, :valid]),
        "qpass": lambda i: qpass_attention(qs[i], ks[i], vs[i], mask),
    }
    row = {"B": B, "L": L, "layers": layers, "kv_MB": kv_bytes / 2 ** 20}
    outs = {name: fn(0) for name, fn in variants.items()}
    for name, fn in variants.items():
        row[f"{name}_graph_us"] = time_graph([(lambda i=i: fn(i)) for i in range(layers)])
        row[f"{name}_bench_us"] = time_bench(lambda: fn(0))
    row["err_vs_sdpa_mask"] = (outs["qpass"].float() - outs["sdpa_mask"].float()).abs().max().item()
    row["err_vs_flash_prefix"] = (outs["qpass"].float() - outs["flash_prefix"].float()).abs().max().item()
    row["qpass_GBps_graph"] = kv_bytes * (1 - MASKED_TAIL) / row["qpass_graph_us"] / 1e3
    from qpass.kernels.attention import dense as ops
    row["qpass_path"] = ops.choose_path(qs[0], ks[0], vs[0], mask, False, True)
    row["flash_prefix_is_flash"] = FLASH["ok"]
    if sweep:  # graph µs of the decode kernel per (programs per SM, key block): to retune attention/decode.py
        from qpass.kernels.attention import decode as A
        row["sweep_graph_us"] = {}
        for per_sm in (1, 2, 4, 8):
            for bn in (32, 64, 128):
                cfg = dict(BLOCK_N=bn, num_warps=4)
                us = time_graph([(lambda i=i: A.decode_attention_triton(qs[i], ks[i], vs[i], mask, None, per_sm=per_sm,
                                                                        config=cfg)) for i in range(layers)])
                row["sweep_graph_us"][f"per_sm={per_sm},BLOCK_N={bn}"] = us
    return row


# ------------------------------------------------------------------ correctness
def check(dev, dry):
    """Op vs fp32 SDPA (math) on the same inputs: every mask kind, G = 3, D = 64, strided q, graph capture,
    all-masked rows, and the causal-mask prefill path. Returns the failures."""
    from qpass.kernels.attention import dense as ops
    from torch.nn.attention import SDPBackend, sdpa_kernel
    fails = []
    gen = torch.Generator(device=dev).manual_seed(1)

    def reference(q, k, v, m):  # fp32 math SDPA: all-masked rows give 0 there (fused CUDA kernels: see below)
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                  m if m is None or m.dtype == torch.bool else m.float(),
                                                  enable_gqa=True)

    def compare(name, out, ref, dt, want_path=None, path=None):
        tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dt]
        err = (out.float() - ref.float()).abs().max().item()
        ok = not out.isnan().any() and err <= tol * max(1.0, ref.abs().max().item()) and path == want_path
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max err {err:.2e} path {path}", flush=True)
        if not ok:
            fails.append(name)

    dts = (torch.float16,) if dry else (torch.bfloat16, torch.float16)
    cases = [(1, 32, 8, 128, 768), (2, 6, 2, 64, 300), (2, 4, 1, 64, 37), (1, 8, 8, 128, 1), (3, 32, 8, 128, 5000)]
    if dry:
        cases = cases[1:3]
    for dt in dts:
        for B, Hq, Hkv, Dh, L in cases:
            for kind in ("none", "bool", "head", "float"):
                q = torch.randn(B, 1, Hq, Dh, device=dev, dtype=dt, generator=gen).transpose(1, 2)  # strided
                k = torch.randn(B, Hkv, L, Dh, device=dev, dtype=dt, generator=gen)
                v = torch.randn(B, Hkv, L, Dh, device=dev, dtype=dt, generator=gen)
                m = {"none": None, "bool": tail_mask(B, L, dev),
                     "head": torch.rand(B, Hq, 1, L, device=dev, generator=gen) > 0.3,
                     "float": torch.randn(B, 1, 1, L, device=dev, generator=gen).masked_fill(
                         torch.rand(B, 1, 1, L, device=dev, generator=gen) < 0.3, -float("inf")).to(dt)}[kind]
                if kind == "head":
                    m[0, 0] = False  # a row with every key masked: 0 (math SDPA gives 0 too)
                ref = reference(q, k, v, m)
                compare(f"decode {str(dt)[6:]} B={B} H={Hq}/{Hkv} D={Dh} L={L} mask={kind}",
                        qpass_attention(q, k, v, m), ref, dt, "decode", ops.choose_path(q, k, v, m, False, True))
    dt = dts[0]
    if not dry:  # inside a CUDA graph (what the e2e decode step does)
        q, k, v = (torch.randn(1, h, s, 128, device=dev, dtype=dt, generator=gen)
                   for h, s in ((32, 1), (8, 700), (8, 700)))
        m = tail_mask(1, 700, dev)
        eager = qpass_attention(q, k, v, m)
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            qpass_attention(q, k, v, m)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g):
            out = qpass_attention(q, k, v, m)
        g.replay()
        torch.cuda.synchronize()
        compare("decode in a CUDA graph == eager", out, eager, dt, "decode", "decode")
    S = 64 if dry else 1024  # prefill with HF's materialized causal mask: flash attention, same result
    q, k, v = (torch.randn(1, h, S, 128, device=dev, dtype=dt, generator=gen) for h in (32, 8, 8))
    causal = torch.ones(S, S, dtype=torch.bool, device=dev).tril()[None, None]
    compare(f"prefill causal mask S={S}", qpass_attention(q, k, v, causal),
            reference(q, k, v, causal), dt,
            "causal", ops.choose_path(q, k, v, causal, False, True))
    # for docs/attention.md: what SDPA's default CUDA kernel gives for a row whose keys are all masked
    q, k, v = (torch.randn(1, h, 1, 128, device=dev, dtype=dt, generator=gen) for h in (8, 8, 8))
    k, v = k.expand(1, 8, 40, 128), v.expand(1, 8, 40, 128)
    none = torch.zeros(1, 1, 1, 40, dtype=torch.bool, device=dev)
    o = F.scaled_dot_product_attention(q, k, v, none)
    print(f"info: SDPA (default backend, {str(dt)[6:]}) on an all-masked row gives "
          f"{'NaN' if o.isnan().any() else 'max |o| = %.3g' % o.abs().max().item()}", flush=True)
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--lens", type=int, nargs="+", default=[768, 4096, 32768])
    ap.add_argument("--out", default=None, help="write the rows as JSON to this path")
    ap.add_argument("--check", action="store_true", help="GPU correctness cases only; exit 1 on a mismatch")
    ap.add_argument("--sweep", action="store_true", help="also time qpass over programs per SM x key block "
                    "(~1 min more on an H100)")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU (TRITON_INTERPRET=1), tiny shapes")
    a = ap.parse_args()
    if a.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import qpass.kernels.attention.ops  # noqa: F401  (registers qpass::attention)

    dev = "cpu" if a.dry_run else "cuda"
    if a.check:
        fails = check(dev, a.dry_run)
        print(f"{len(fails)} failure(s)" + ("".join(f"\n  {f}" for f in fails)))
        sys.exit(1 if fails else 0)
    dt = torch.float16 if a.dry_run else torch.bfloat16  # bf16 arithmetic is wrong in the interpreter
    lens = [64] if a.dry_run else a.lens
    batches = [1] if a.dry_run else a.batch
    t0 = time.time()
    res = {"gpu": "dry-run (CPU interpreter)" if a.dry_run else torch.cuda.get_device_name(),
           "torch": torch.__version__, "H": H, "Hkv": HKV, "D": D, "dtype": str(dt), "masked_tail": MASKED_TAIL,
           "rows": []}
    for B in batches:
        for L in lens:
            row = bench_shape(B, L, dev, dt, a.sweep)
            res["rows"].append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    res["seconds"] = time.time() - t0
    print(f"\n{'B':>2} {'L':>6} | {'graph µs: sdpa_mask':>19} {'flash_pfx':>9} {'qpass':>7} | "
          f"{'bench µs: sdpa_mask':>19} {'flash_pfx':>9} {'qpass':>7} | {'GB/s':>5} {'max err':>8}")
    for r in res["rows"]:
        print(f"{r['B']:>2} {r['L']:>6} | {r['sdpa_mask_graph_us']:>19.1f} {r['flash_prefix_graph_us']:>9.1f} "
              f"{r['qpass_graph_us']:>7.1f} | {r['sdpa_mask_bench_us']:>19.1f} {r['flash_prefix_bench_us']:>9.1f} "
              f"{r['qpass_bench_us']:>7.1f} | {r['qpass_GBps_graph']:>5.0f} {r['err_vs_sdpa_mask']:>8.1e}")
    print(f"({res['seconds']:.0f} s)")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
        print("wrote", a.out)


if __name__ == "__main__":
    main()
