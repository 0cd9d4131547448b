"""Does mixed_precision's sensitivity rank sites as the loss does? For each site: the proxy (`--sensitivity`: the
output error tr(ΔW H ΔWᵀ), its Fisher-weighted form, or the calibration loss; at `--bits`, from the pass) against the true increase of held-out loss when only that site is
rounded (RTN, the recipe's group settings) at `--bits`. Prints Spearman's rank correlation and the top sites.

    python benchmarks/mixed_ranking.py --model ../shared/models/stories260K --bits 3 --sensitivity fisher
"""
from __future__ import annotations

import argparse
import math

import torch

import qpass
from qpass import data
from qpass.evaluate import perplexity
from qpass.models import load as load_model
from qpass.numerics import quantize_weight


def spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--sensitivity", default="output_error", choices=["output_error", "fisher", "loss"])
    args = p.parse_args()
    model, tok = load_model(args.model)
    calib = data.calibration_batches(tok, "emma", args.calib_samples, 256)
    recipe = {"weights": {"bits": 4, "group_size": 64, "symmetric": False},
              "passes": [{"name": "mixed_precision", "target_bits": 4.0, "sensitivity": args.sensitivity}]}
    q = qpass.compile(model, recipe, calib, progress=False, lower=False, copy=True)  # `model` stays FP
    alloc = q.qpass_state.plan.allocation
    ids = data.austen_tokens(tok, "prideprejudice", args.eval_tokens)
    base = math.log(perplexity(model, ids, 256, progress=False))
    proxy, true = [], []
    for name, a in alloc.items():
        site = next(s for s in q.qpass_state.analysis.linears if s.name == name)
        param = model.get_parameter(site.weight)
        saved = param.detach().clone()
        w = saved.t() if site.transposed else saved
        deq = quantize_weight(w.float(), args.bits, 64, False).dequantize().to(param.dtype)
        with torch.no_grad():
            param.copy_(deq.t() if site.transposed else deq)
            true.append(math.log(perplexity(model, ids, 256, progress=False)) - base)
            param.copy_(saved)
        proxy.append(a.sensitivity[args.bits])
    names = list(alloc)
    print(f"{len(names)} sites, {args.bits}-bit RTN g64 asym one at a time; held-out NLL base {base:.4f}")
    print(f"Spearman(proxy {args.sensitivity}, true NLL increase) = {spearman(proxy, true):.3f}")
    per_weight = [t / alloc[n].weights for t, n in zip(true, names)]
    print(f"Spearman per weight (proxy/weights vs true/weights) = "
          f"{spearman([x / alloc[n].weights for x, n in zip(proxy, names)], per_weight):.3f}")
    for i in sorted(range(len(names)), key=lambda i: -true[i])[:8]:
        print(f"  {names[i]:<40} true +{true[i]:.4f}  proxy {proxy[i]:.3e}")


if __name__ == "__main__":
    main()
