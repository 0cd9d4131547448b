"""QSM ablation on SmolLM2: calibrate once (Emma, N × 512, first token skipped), then compile each variant from
copies of the same statistics and measure perplexity on the first T tokens of Pride and Prejudice (seq 512).
    python benchmarks/qsm_ablation.py [--samples 16] [--tokens 2048] [--bits 4]
writes benchmarks/results/qsm_ablation_a{bits}.json."""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import qpass
from qpass import api, data, models
from qpass.calibrate import calibrate
from qpass.capture import compile_forward
from qpass.passes import registry
from qpass.passes.context import PassContext
from qpass.passes.fake_quant import insert_fake_quant, plan_quantization
from qpass.plan import select_sites
from qpass.recipe import ActivationSpec, CalibrationSpec, PassSpec, Recipe, WeightSpec


def variants(bits):
    a = ActivationSpec(bits=bits, granularity="per_channel")
    w = WeightSpec(bits=4, group_size=64)
    q = lambda **o: [PassSpec("qsm", o)]  # noqa: E731
    return {
        "naive: per-row W4, no sort, no clip": Recipe(weights=WeightSpec(bits=4, group_size=None), activations=a, passes=q(sort="none", clip_search=False)),
        "+ g64 weight scales": Recipe(weights=w, activations=a, passes=q(sort="none", clip_search=False)),
        "+ sort channels by step": Recipe(weights=w, activations=a, passes=q(clip_search=False)),
        "+ clip search": Recipe(weights=w, activations=a, passes=q()),
        "+ split outlier columns (2x median, tile 64)": Recipe(weights=w, activations=a, passes=q(split=2.0)),
        "+ GPTQ (no split)": Recipe(weights=WeightSpec(bits=4, group_size=64, rounding="gptq"), activations=a, passes=q()),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--only", default=None)
    args = p.parse_args()
    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", args.tokens)
    calib = data.calibration_batches(tok, "emma", args.samples, 512)
    t = time.perf_counter()
    analysis, _ = api.capture_analysis(model, calib[0][:1, :32])
    first = next(iter(variants(args.bits).values()))
    selected, _ = select_sites(analysis, first)
    obs = calibrate(model, calib, set(selected), None, False, skip_tokens=1, samples=256, hessian=True)
    print(f"calibrated in {time.perf_counter() - t:.0f} s", flush=True)
    results = {}
    for name, recipe in variants(args.bits).items():
        if args.only and args.only not in name:
            continue
        t = time.perf_counter()
        m = copy.deepcopy(model)
        a, _ = api.capture_analysis(m, calib[0][:1, :32])
        sel, _ = select_sites(a, recipe)
        ctx = PassContext(m, recipe, a, sel, copy.deepcopy(obs), progress=False)
        for spec in recipe.passes:
            registry.get(spec.name).fn(ctx, registry.validate(spec, "passes"))
        plan_quantization(ctx)
        fwd, _ = compile_forward(m, lambda cap: insert_fake_quant(cap, ctx.plan))
        m.forward = fwd
        secs = time.perf_counter() - t
        ppl = qpass.perplexity(m, ids, 512, progress=False)
        errs = [sp.output_error for sp in ctx.plan.values() if sp.output_error is not None]
        results[name] = {"ppl": ppl, "passes_seconds": secs, "mean_output_error": sum(errs) / max(len(errs), 1)}
        print(f"{name:<48} ppl {ppl:9.2f}  mean out err {results[name]['mean_output_error']:.4f}  ({secs:.0f} s)", flush=True)
    out = {"command": f"python benchmarks/qsm_ablation.py --samples {args.samples} --tokens {args.tokens} --bits {args.bits}",
           "calib_samples": args.samples, "eval_tokens": args.tokens, "results": results}
    with open(f"benchmarks/results/qsm_ablation_a{args.bits}.json", "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
