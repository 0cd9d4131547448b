"""Screen data-free W4A16 weight quantizers on a real model: every linear but lm_head replaced by its
quantize-dequantize (exactly what the w4a16 fake-quant graph computes), perplexity with qpass.perplexity.

    python benchmarks/w4a16_methods.py --model smollm2 --groups 64,128
    python benchmarks/w4a16_methods.py --model ../shared/models/stories260K --text ../shared/data/tinystories/ahmedessaa_TinyStories-valid_excerpt.txt

Writes benchmarks/results/w4a16_methods_<model>.json. The default preset's number is confirmed through the
pipeline with `qpass eval --recipe w4a16` (docs/results.md)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qpass import data, models
from qpass.evaluate import perplexity
from qpass.numerics import quantize_weight

METHODS = {  # name -> (symmetric, clip_search)
    "sym": (True, "none"),
    "asym": (False, "none"),
    "sym+mse": (True, "mse"),
    "asym+mse": (False, "mse"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--text", default=None, help="evaluation text file (default: Pride and Prejudice)")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--groups", default="64")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    torch.manual_seed(0)
    model, tok = models.load(args.model)
    text = data.read_text_file(args.text) if args.text else data.austen_text("prideprejudice")
    ids = data.tokens(tok, text, args.tokens or None)
    original = {n: m.weight.detach().clone() for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")}
    out = {"model": args.model, "tokens": int(ids.numel()), "seq_len": args.seq_len, "bits": args.bits,
           "sites": len(original), "fp": perplexity(model, ids, args.seq_len, progress=False), "rows": []}
    print(f"FP {out['fp']:.3f} ({ids.numel()} tokens, {len(original)} sites)", flush=True)
    for g in [int(x) for x in args.groups.split(",")]:
        for name in args.methods.split(","):
            symmetric, search = METHODS[name]
            t = time.perf_counter()
            num = den = 0.0
            with torch.no_grad():
                for n, w in original.items():
                    wq = quantize_weight(w, args.bits, g, symmetric, 1.0, search).dequantize()
                    num += float((wq - w).pow(2).sum())
                    den += float(w.pow(2).sum())
                    model.get_submodule(n).weight.copy_(wq)
            qtime = time.perf_counter() - t
            ppl = perplexity(model, ids, args.seq_len, progress=False)
            row = {"group": g, "method": name, "ppl": ppl, "ppl_vs_fp": ppl / out["fp"],
                   "weight_rel_err": (num / den) ** 0.5, "quantize_s": qtime}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    with torch.no_grad():
        for n, w in original.items():
            model.get_submodule(n).weight.copy_(w)
    dest = Path(__file__).parent / "results" / f"w4a16_methods_{Path(args.model).name}.json"
    dest.write_text(json.dumps(out, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
