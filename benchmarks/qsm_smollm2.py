"""QSM / SmoothQuant / GPTQ on SmolLM2-135M-Instruct (dequantized from Q4_1): perplexity on Pride and Prejudice
(first 8,192 tokens, seq 512), calibration on Emma. Usage:
    python benchmarks/qsm_smollm2.py NAME PRESET [JSON overrides of the recipe dict] [--samples N]
writes benchmarks/results/qsm_NAME.json."""
from __future__ import annotations

import json
import sys
import time

import torch

import qpass
from qpass import data, models
from qpass.recipe import Recipe, resolve


def merge(d: dict, o: dict) -> dict:
    for k, v in o.items():
        d[k] = merge(d.get(k) or {}, v) if isinstance(v, dict) and not k == "options" else v
    return d


def main(argv):
    name, preset = argv[0], argv[1]
    over = json.loads(argv[2]) if len(argv) > 2 and not argv[2].startswith("--") else {}
    samples = int(argv[argv.index("--samples") + 1]) if "--samples" in argv else None
    recipe = Recipe.from_dict(merge(resolve(preset).to_dict(), over))
    model, tok = models.load("smollm2")
    ids = data.austen_tokens(tok, "prideprejudice", 8192)
    n = samples or recipe.calibration.num_samples
    calib = data.calibration_batches(tok, "emma", n, recipe.calibration.seq_len) if recipe.needs_calibration else None
    t = time.perf_counter()
    q = qpass.compile(model, recipe, calib, progress=False, copy=True)
    secs = time.perf_counter() - t
    ppl = qpass.perplexity(q, ids, 512, progress=False)
    rows = qpass.report(q).rows
    errs = [r.output_error for r in rows if getattr(r, "output_error", None) is not None]
    by_kind: dict[str, list[float]] = {}  # mean output error per projection (q_proj, o_proj, down_proj, ...)
    for r in rows:
        if getattr(r, "output_error", None) is not None:
            by_kind.setdefault(r.name.rsplit(".", 1)[-1], []).append(r.output_error)
    out = {"name": name, "preset": preset, "overrides": over, "calib_samples": n, "ppl": ppl, "quantize_seconds": secs,
           "mean_output_error": sum(errs) / len(errs) if errs else None, "output_error_by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
           "output_error_by_site": {r.name: r.output_error for r in rows if getattr(r, "output_error", None) is not None},
           "recipe": recipe.to_dict(),
           "command": "python benchmarks/qsm_smollm2.py " + " ".join(f"'{a}'" if a.startswith("{") else a for a in argv)}
    with open(f"benchmarks/results/qsm_{name}.json", "w") as f:
        json.dump(out, f, indent=2)
    print(f"{name}: ppl {ppl:.2f}  quantize {secs:.1f} s  mean out err {out['mean_output_error']}", flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1:])
