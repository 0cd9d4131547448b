"""SALE accuracy on SmolLM2-135M (CPU, pure-torch reference path): per-head τ calibrated on Emma, evaluated on
Pride and Prejudice at 4K and 8K context — block sparsity, attention-output relative L1 error vs dense, and
perplexity change.

    python benchmarks/sale_smollm2.py [--calib 4096] [--ctx 4096 8192] [--tokens 8192] [--theta 0.4 ...] [--pool 1 4 ...]

Writes benchmarks/results/sale_smollm2_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import qpass.models
from qpass.data import austen_tokens
from qpass.passes.sale import SaleOptions, calibrate_taus, choose_taus, tau_ladder, use_sale


def nll(model, ids: torch.Tensor, L: int) -> tuple[float, int]:
    tot, n = 0.0, 0
    for s in range(0, ids.numel() - L + 1, L):
        w = ids[s:s + L][None]
        with torch.no_grad():
            logits = model(input_ids=w, use_cache=False).logits.float()
        tot += float(F.cross_entropy(logits[0, :-1], w[0, 1:], reduction="sum"))
        n += L - 1
    return tot, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=4096)
    ap.add_argument("--ctx", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--tokens", type=int, default=8192, help="eval tokens of Pride and Prejudice per context")
    ap.add_argument("--theta", type=float, nargs="+", default=[0.4])
    ap.add_argument("--block", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--out", default="benchmarks/results/sale_smollm2_cpu.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tau-init", type=float, default=0.008)
    ap.add_argument("--load-calib", default=None, help="reuse the calibration tables of an earlier JSON")
    ap.add_argument("--pool", type=int, nargs="+", default=[1],
                    help="coarse estimate: query rows mean-pooled P at a time (τ calibrated with the same P); "
                         "several values: one calibration + eval each, dense PPL computed once, one JSON per P "
                         "(--out with _pool<P> before .json when P > 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, tok = qpass.models.load("smollm2")
    pp = austen_tokens(tok, "prideprejudice", max(a.tokens, max(a.ctx)))
    dense = {}
    for L in sorted(a.ctx, reverse=True):
        t0 = time.time()
        dense[L] = nll(model, pp, L)
        print(f"dense L={L}: ppl {math.exp(dense[L][0] / dense[L][1]):.4f} ({time.time() - t0:.0f}s)", flush=True)
    for pool in a.pool:
        out = a.out if pool == 1 else a.out.replace(".json", f"_pool{pool}.json")
        run(a, model, tok, pp, dense, pool, out)


def run(a, model, tok, pp, dense, pool, out):
    opts = SaleOptions(block_m=a.block[0], block_n=a.block[1], calib_tokens=a.calib, tau_init=a.tau_init,
                       pool=pool, theta=a.theta[0])
    args = {k: v for k, v in vars(a).items() if k != "out" and v is not None} | {"pool": pool}
    res = {"command": "python benchmarks/sale_smollm2.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in args.items()),
        "model": "SmolLM2-135M-Instruct fp32", "device": "CPU (reference implementation)", "options": None,
        "calibration": {}, "eval": []}
    print(f"=== pool {pool} -> {out}", flush=True)
    t0 = time.time()
    if a.load_calib:
        res["calibration"] = json.loads(Path(a.load_calib).read_text())["calibration"]
        table = res["calibration"]["tables"]
    else:
        table = calibrate_taus(model, austen_tokens(tok, "emma", a.calib)[None], opts).table
        res["calibration"] = {"novel": "emma", "tokens": a.calib, "seconds": round(time.time() - t0, 1),
                              "pool": pool, "ladder": tau_ladder(opts), "tables": table}
    print(f"calibrated in {time.time() - t0:.0f}s", flush=True)
    l1 = torch.tensor([t["l1"] for t in table.values()])
    kept = torch.tensor([t["kept"] for t in table.values()])
    print("tau ladder", [f"{t:.2g}" for t in tau_ladder(opts)])
    print("mean L1/row per tau", [f"{x:.3f}" for x in l1.mean((0, 1)).tolist()])
    print("mean skipped per tau", [f"{1 - x:.3f}" for x in kept.mean((0, 1)).tolist()], flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    res["options"] = dict(opts.__dict__)
    ladder = tau_ladder(opts)
    for theta in a.theta:
        taus = {n: choose_taus(torch.tensor(t["l1"]), ladder, theta, opts.tau_dense) for n, t in table.items()}
        heads = [t for v in taus.values() for t in v]
        for L in sorted(a.ctx, reverse=True):
            t0 = time.time()
            with use_sale(model, "sale", opts, taus) as ctx:
                s_nll = nll(model, pp, L)
            st = ctx.stats
            kept = sum(v["kept"] for v in st.values()) / sum(v["causal"] for v in st.values())
            l1 = sum(v["l1"] for v in st.values()) / sum(v["norm"] for v in st.values())
            d_ppl, s_ppl = math.exp(dense[L][0] / dense[L][1]), math.exp(s_nll[0] / s_nll[1])
            row = {"pool": pool, "theta": theta, "ctx": L, "windows": pp.numel() // L, "dense_ppl": round(d_ppl, 4),
                   "sale_ppl": round(s_ppl, 4), "ppl_change_pct": round(100 * (s_ppl / d_ppl - 1), 3),
                   "causal_blocks_skipped_pct": round(100 * (1 - kept), 2), "attn_out_rel_l1": round(l1, 5),
                   "dense_heads": sum(t <= opts.tau_dense for t in heads), "heads": len(heads),
                   "tau_median": sorted(heads)[len(heads) // 2],
                   "per_layer_skipped_pct": {n: round(100 * (1 - v["kept"] / v["causal"]), 1) for n, v in st.items()},
                   "seconds": round(time.time() - t0, 1), "taus": taus}
            res["eval"].append(row)
            print({k: v for k, v in row.items() if k not in ("taus", "per_layer_skipped_pct")}, flush=True)
            Path(out).write_text(json.dumps(res, indent=1))
    Path(out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
