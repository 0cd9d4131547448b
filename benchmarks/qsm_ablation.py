"""QSM ablation on SmolLM2: calibrate once (Emma, N × 512, first token skipped), then compile each variant from
copies of the same statistics and measure perplexity on the first T tokens of Pride and Prejudice (seq 512).
    python benchmarks/qsm_ablation.py [--samples 16] [--tokens 2048] [--bits 4]
writes benchmarks/results/qsm_ablation_a{bits}.json.
Screening mode (the dev loop of docs/qsm.md): variants = a preset + JSON overrides (as in qsm_smollm2.py), one
calibration per skip_tokens shared by all of them (samples, Hessian and sink Hessian always collected):
    python benchmarks/qsm_ablation.py --samples 16 --tokens 2048 --screen PRESET 'JSON' [PRESET 'JSON' ...]
prints one RESULT line per variant and writes benchmarks/results/qsm_screen_{name}.json with --name NAME."""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import qpass
from qpass import api, data, models
from qpass.calibrate import calibrate
from qpass.driver import calibration_statistics, plan_model
from qpass.lowering.qdq import insert_fake_quant
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
    p.add_argument("--screen", nargs="+", default=None, metavar="PRESET JSON")
    p.add_argument("--name", default=None)
    args = p.parse_args()
    if args.screen:
        return screen(args)
    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", args.tokens)
    calib = data.calibration_batches(tok, "emma", args.samples, 512)
    t = time.perf_counter()
    analysis = api.capture_analysis(model, calib[0][:1, :32]).analysis
    first = next(iter(variants(args.bits).values()))
    selected, _ = select_sites(analysis, first.ignore)
    obs = calibrate(model, calib, set(selected), None, False, skip_tokens=1, samples=256, hessian=True)
    print(f"calibrated in {time.perf_counter() - t:.0f} s", flush=True)
    results = {}
    for name, recipe in variants(args.bits).items():
        if args.only and args.only not in name:
            continue
        ppl, secs, err = evaluate_variant(model, recipe, calib, lambda sel: copy.deepcopy(obs), ids)
        results[name] = {"ppl": ppl, "passes_seconds": secs, "mean_output_error": err}
        print(f"{name:<48} ppl {ppl:9.2f}  mean out err {results[name]['mean_output_error']:.4f}  ({secs:.0f} s)", flush=True)
    out = {"command": f"python benchmarks/qsm_ablation.py --samples {args.samples} --tokens {args.tokens} --bits {args.bits}",
           "calib_samples": args.samples, "eval_tokens": args.tokens, "results": results}
    with open(f"benchmarks/results/qsm_ablation_a{args.bits}.json", "w") as f:
        json.dump(out, f, indent=2)


def evaluate_variant(model, recipe, calib, observers, ids):
    """Compile a copy of `model` with `recipe` from calibration statistics (`observers(selected sites)`), run the
    passes and fake-quant it; returns (perplexity on `ids`, seconds for the passes, mean relative output error)."""
    t = time.perf_counter()
    m = copy.deepcopy(model)
    captured = api.capture_analysis(m, calib[0][:1, :32])
    sel, _ = select_sites(captured.analysis, recipe.ignore)
    plan = plan_model(m, recipe, captured.analysis, observers=observers(sel), progress=False)
    captured.graphs.retransform(lambda cap: insert_fake_quant(cap, plan))  # the same capture, no new trace
    m.forward = captured.graphs.forward
    secs = time.perf_counter() - t
    ppl = qpass.perplexity(m, ids, 512, progress=False)
    errs = [sp.output_error for sp in plan.values() if sp.output_error is not None]
    return ppl, secs, sum(errs) / max(len(errs), 1)


def screen(args):
    from qsm_smollm2 import merge

    from qpass.recipe import resolve

    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", args.tokens)
    calib = data.calibration_batches(tok, "emma", args.samples, 512)
    cache, results = {}, {}
    for preset, js in zip(args.screen[::2], args.screen[1::2]):
        recipe = Recipe.from_dict(merge(resolve(preset).to_dict(), json.loads(js)))
        stats = calibration_statistics(recipe)
        sink_weight = stats.pop("sink_weight", 0.0)
        stats.update(samples=256, hessian=True, sink_weight=1e-9 if stats["skip_tokens"] else 0.0)
        def observers(sel, recipe=recipe, stats=stats, sink_weight=sink_weight):
            if not recipe.needs_calibration:
                return {}
            if stats["skip_tokens"] not in cache:
                cache[stats["skip_tokens"]] = calibrate(model, calib, set(sel), None, False, **stats)
            obs = copy.deepcopy(cache[stats["skip_tokens"]])
            for o in obs.values():
                o.sink_weight = sink_weight
            return obs

        ppl, secs, err = evaluate_variant(model, recipe, calib, observers, ids)
        results[f"{preset} {js}"] = {"ppl": ppl, "seconds": secs, "mean_output_error": err}
        print(f"RESULT {preset} {js}: ppl {ppl:.3f}  ({secs:.0f} s)", flush=True)
    if args.name:
        out = {"command": f"python benchmarks/qsm_ablation.py --samples {args.samples} --tokens {args.tokens} --screen ...",
               "calib_samples": args.samples, "eval_tokens": args.tokens, "results": results}
        with open(f"benchmarks/results/qsm_screen_{args.name}.json", "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
