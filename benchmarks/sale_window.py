"""SALE on a sliding-window layer, by measurement (docs/sale.md "Per-layer attention"): is the window-limited
SALE op faster than the dense-local attention the model runs otherwise?

    python benchmarks/sale_window.py --out $OUT/sale_window.json            # GPU: seq 8192 16384, W 4096
    python benchmarks/sale_window.py --smoke --out /tmp/sale_window.json    # CPU interpreter, tiny shapes (64x64 blocks)

Per sequence length S, B 1, 32 query / 8 KV heads, d 128, bf16 (smoke: 4 / 2 heads, d 64, fp16 on the CPU):
- `dense_local_ms`: `qpass::attention` with the window's bool mask — what a dense-local layer runs (HF's mask);
- `flex_window_ms`: FlexAttention with the sliding-window block mask (a dense kernel that skips the blocks outside
  the window; GPU only, `--no-flex` to leave it out);
- `causal_ms`: causal SDPA over the whole sequence (context: the window's upper bound of work);
- `sale_window_*`: `sale_attention_triton(..., model_window=W)` (per-head selection, the `sale` preset's 128×64
  blocks and pool 8): select, attention over its selection, and the whole op (`total`); `kept_of_window`: kept
  blocks / blocks inside the window; `tau0_ms`: the same op at τ = 0 (every window block: SALE's kernels as a
  window-limited dense kernel, select included);
- `sale_causal_*`: the same τ without the window (full causal SALE), for comparison;
- `sale_window_at<P>_*`: the sparse attention over random masks skipping P% of the window's blocks (`--sparsity`),
  and that plus the windowed select (`total`): the op's cost at a controlled sparsity.
q / k are random with 'hot' key blocks (a shared direction), so the selection keeps some far blocks and skips
others; τ (`--tau`) is one value for every head. A check per S: τ = 0 windowed SALE vs the window-masked SDPA.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F


def inputs(H, Hkv, S, D, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(D, generator=g)
    u = u / u.norm() * (D / 64) ** 0.25
    q = torch.randn(1, H, S, D, generator=g) + 3 * u
    k = torch.randn(1, Hkv, S, D, generator=g)
    hot = torch.rand(S // 64 + 1, generator=g) < 0.2
    k = k + torch.where(hot.repeat_interleave(64)[:S], 3.0, -3.0)[:, None] * u
    v = torch.randn(1, Hkv, S, D, generator=g)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


def timer(device, rep):
    if device == "cuda":
        import triton

        return lambda fn: triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median")

    def cpu(fn):  # the interpreter: one call after a warm-up (timings only show the script runs)
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    return cpu


def window_mask(S, W, device):
    i = torch.arange(S, device=device)
    return ((i[None] <= i[:, None]) & (i[:, None] - i[None] < W))[None, None]


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def run(a):
    import qpass.kernels.attention.ops  # noqa: F401  (registers qpass::attention)
    from qpass.kernels.sale import dispatch as K
    from qpass.kernels.sale import reference as R

    dev = "cpu" if a.smoke else "cuda"
    H, Hkv, D, dt = (4, 2, 64, torch.float16) if a.smoke else (a.heads[0], a.heads[1], a.dim, torch.bfloat16)
    seqs, W = (a.seqs, a.window) if not a.smoke else ([384, 520], 200)
    bm, bn = a.block if not a.smoke else (64, 64)  # smoke: small blocks, so some window blocks are estimated
    sink, band, pool = 64, 256 if not a.smoke else 64, a.pool
    scale = D ** -0.5
    tm = timer(dev, a.rep)
    res = {"device": "CPU interpreter (smoke)" if a.smoke else torch.cuda.get_device_name(), "torch": torch.__version__,
           "shape": dict(B=1, H=H, Hkv=Hkv, D=D, dtype=str(dt).replace("torch.", "")), "window": W,
           "block": [bm, bn], "sink": sink, "sale_window_band": band, "pool": pool, "tau": a.tau, "rows": []}
    flex = None
    if not a.smoke and not a.no_flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

    def save():
        d = os.path.dirname(a.out)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    for S in seqs:
        q, k, v = inputs(H, Hkv, S, D, dt, dev)
        tau = torch.full((H,), a.tau)
        row = {"seq": S}
        wm = window_mask(S, W, dev)
        dense_local = lambda: torch.ops.qpass.attention(q, k, v, wm, False, scale, True)  # noqa: E731
        row["dense_local_ms"] = tm(dense_local)
        row["causal_ms"] = tm(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        if flex is not None:
            def sliding(b, h, qi, ki):
                return (qi >= ki) & (qi - ki < W)
            bmask = create_block_mask(sliding, None, None, S, S, device=dev)
            row["flex_window_ms"] = tm(lambda: flex(q, k, v, block_mask=bmask, enable_gqa=True))
        want = dense_local()
        for name, mw in (("sale_window", W), ("sale_causal", None)):
            kw = dict(group=False, pool=pool, model_window=mw)
            idx, cnt, mask = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, band, **kw)
            causal = R.block_layout(S, bm, bn, 0, 0, mw)[2].to(dev)
            row[f"{name}_kept_of_window"] = float(mask.bool()[..., causal].float().mean())
            row[f"{name}_kept_of_causal"] = float(mask.bool().sum() / (R.causal_block_count(S, bm, bn) * H))
            row[f"{name}_select_ms"] = tm(lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, band, **kw))
            row[f"{name}_attn_ms"] = tm(lambda: K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn,
                                                                               model_window=mw))
            row[f"{name}_total_ms"] = tm(lambda: K.sale_attention_triton(q, k, v, tau, scale, bm, bn, sink, band,
                                                                         **kw))
            out = K.sale_attention_triton(q, k, v, tau, scale, bm, bn, sink, band, **kw)
            row[f"{name}_rel_err_vs_dense_local"] = rel_err(out, want)
        # the sparse attention at controlled shares of the window's blocks skipped (random masks; always-kept
        # blocks stay), plus the windowed select: what the op would cost at that sparsity
        nqb, nkb, causal, always = R.block_layout(S, bm, bn, sink, band, W)
        causal, always = causal.to(dev), always.to(dev)
        middle = causal & ~always
        g = torch.Generator(device=dev).manual_seed(0)
        draw = torch.rand(1, H, nqb, nkb, device=dev, generator=g)
        for target in a.sparsity:
            r = float(((1 - target) * causal.sum() - always.sum()).clamp_min(0) / middle.sum().clamp_min(1))
            keep = always | (middle & (draw < r))
            idx, cnt = R.mask_to_index(keep)
            key = f"sale_window_at{round(100 * target)}"
            row[f"{key}_skipped"] = 1 - float(keep.sum()) / (float(causal.sum()) * H)
            row[f"{key}_attn_ms"] = tm(lambda: K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn,
                                                                               model_window=W))
            row[f"{key}_total_ms"] = row["sale_window_select_ms"] + row[f"{key}_attn_ms"]
        zero = torch.zeros(H)
        row["sale_window_tau0_ms"] = tm(lambda: K.sale_attention_triton(q, k, v, zero, scale, bm, bn, sink, band,
                                                                        group=False, pool=pool, model_window=W))
        row["check_tau0_rel_err"] = rel_err(K.sale_attention_triton(q, k, v, zero, scale, bm, bn, sink, band,
                                                                    group=False, pool=pool, model_window=W), want)
        row["sale_window_speedup_vs_dense_local"] = row["dense_local_ms"] / row["sale_window_total_ms"]
        res["rows"].append(row)
        save()
        print(json.dumps(row), flush=True)
    print(f"\nW = {W}, {H}/{Hkv} heads, d {D}, {res['shape']['dtype']}, {bm}x{bn} blocks, pool {pool}, τ {a.tau} "
          f"({res['device']})")
    hdr = (f"{'seq':>6} {'dense-loc':>9} {'flex-win':>8} {'causal':>7} | {'SALE-win':>8} {'sel':>6} {'attn':>6} "
           f"{'kept/win':>8} {'x dense':>7} {'tau0':>7} | {'SALE-caus':>9} {'kept/caus':>9} | {'chk τ0':>7}")
    print(hdr)
    for r in res["rows"]:
        print(f"{r['seq']:>6} {r['dense_local_ms']:>9.2f} {r.get('flex_window_ms', float('nan')):>8.2f} "
              f"{r['causal_ms']:>7.2f} | {r['sale_window_total_ms']:>8.2f} {r['sale_window_select_ms']:>6.2f} "
              f"{r['sale_window_attn_ms']:>6.2f} {r['sale_window_kept_of_window']:>8.1%} "
              f"{r['sale_window_speedup_vs_dense_local']:>6.2f}x {r['sale_window_tau0_ms']:>7.2f} | "
              f"{r['sale_causal_total_ms']:>9.2f} {r['sale_causal_kept_of_causal']:>9.1%} | "
              f"{r['check_tau0_rel_err']:>7.1e}")
    for r in res["rows"]:
        print(f"S {r['seq']}: window blocks skipped -> select + attention ms (x dense-local): " + ", ".join(
            f"{r[f'sale_window_at{round(100 * t)}_skipped']:.0%} -> {r[f'sale_window_at{round(100 * t)}_total_ms']:.2f}"
            f" ({r['dense_local_ms'] / r[f'sale_window_at{round(100 * t)}_total_ms']:.2f}x)" for t in a.sparsity))
    print(f"(ms; JSON: {a.out})")
    bad = [r["seq"] for r in res["rows"] if not r["check_tau0_rel_err"] < (2e-2 if not a.smoke else 2e-3)]
    if bad:
        raise SystemExit(f"τ = 0 windowed SALE differs from the window-masked attention at S = {bad}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqs", type=int, nargs="+", default=[8192, 16384])
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("H", "HKV"))
    ap.add_argument("--dim", type=int, default=128, choices=[64, 128])
    ap.add_argument("--block", type=int, nargs=2, default=[128, 64])
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8],
                    help="shares of the window's blocks skipped by random masks (attention timed at each)")
    ap.add_argument("--rep", type=int, default=100, help="do_bench's rep (ms of timed runs per measurement)")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    ap.add_argument("--out", default="benchmarks/results/sale_window.json")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
