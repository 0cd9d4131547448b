"""Papers' evaluation of a model under several presets, in one process: WikiText-2 test perplexity, our
*Pride and Prejudice* perplexity, and zero-shot PIQA / HellaSwag accuracy (lm-eval's prompts and metrics).

`--presets` takes preset names or recipe files (YAML/JSON); without `--wikitext` / `--task-data` only the
*Pride and Prejudice* figure is computed. Each preset quantizes a fresh copy of the model loaded in `--dtype` on
`--device` (calibrated presets on 32 × 512 tokens of *Emma*, the CLI's default), then:

- WikiText-2: `wiki.test.raw` rows joined as GPTQ/QuaRot do, non-overlapping windows of `--seq-len` (2048);
- *Pride and Prejudice*: the first 8,192 tokens, 512-token windows (docs/results.md's protocol);
- PIQA (validation, 1,838) and HellaSwag (validation, 10,042): acc and acc_norm, `--limit` to shorten.

Prints a table and writes one JSON (`--out`). On a GPU every figure comes from the lowered model (qpass kernels),
unless `--fake-quant`.

    python benchmarks/paper_eval.py --model smollm2 --presets fp,w8a8,w4a16 --wikitext ../shared/data/wikitext-2-raw/wiki.test.raw \
        --task-data ../shared/data --device cuda --dtype bfloat16 --out results.json
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

import qpass
from qpass import data, models, zeroshot
from qpass.evaluate import perplexity
from qpass.recipe import resolve


def quantize(model, tok, preset: str, device: torch.device, lower: bool = True, novel: str | None = "emma"):
    """(model to evaluate, seconds spent quantizing, number of sites quantized). `novel=None` passes no
    calibration data (a recipe with `calibration.self_generated` samples its own from the model)."""
    if preset == "fp":
        return model, 0.0, 0
    recipe = resolve(preset)
    calib = None
    if novel and (recipe.needs_calibration or recipe.passes):
        c = recipe.calibration
        calib = [b.to(device) for b in data.calibration_batches(tok, novel, c.num_samples, c.seq_len)]
    start = time.perf_counter()
    q = qpass.compile(model, recipe, calib, progress=False, lower=lower)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return q, time.perf_counter() - start, len(q.qpass_state.report.quantized)


def evaluate_preset(args, preset: str) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model, tok = models.load(args.model, dtype=dtype)
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    q, quant_s, sites = quantize(model, tok, preset, device, lower=not args.fake_quant,
                                 novel=None if args.no_calib_data else "emma")
    row = {"preset": preset, "dtype": args.dtype, "device": str(device), "quantize_s": round(quant_s, 1),
           "sites_quantized": sites, "graph": "fake-quant" if args.fake_quant else "lowered"}
    if preset != "fp":
        row["pass_log"] = list(q.qpass_state.plan.log)  # what the passes said (e.g. mixed precision's bits)
    start = time.perf_counter()
    if args.wikitext:
        wiki = data.tokens(tok, data.wikitext2_text(args.wikitext))
        row["wikitext2_ppl"] = perplexity(q, wiki, args.seq_len, progress=False)
        row["wikitext2_tokens"] = int(wiki.numel())
    austen = data.austen_tokens(tok, "prideprejudice", 8192)
    row["austen_ppl"] = perplexity(q, austen, 512, progress=False)
    row["ppl_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    tasks = zeroshot.evaluate(q, tok, ["piqa", "hellaswag"], limit=args.limit, data_dir=args.task_data,
                              batch_size=args.batch_size, progress=False) if args.task_data else {}
    row["zeroshot_s"] = round(time.perf_counter() - start, 1)
    for name, r in tasks.items():
        row[name] = r
    if device.type == "cuda":
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    # the process's peak so far (Linux KiB): this preset's own peak only when it is the first in the run
    row["process_peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    del q, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--presets", default="fp,w8a8,w4a16,w4a16-gptq,w4a4-qsm,ternary")
    p.add_argument("--wikitext", help="wiki.test.raw (left out: no WikiText-2 figure)")
    p.add_argument("--task-data", help="folder holding piqa/ and hellaswag/ (left out: no zero-shot figures)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--limit", type=int, default=None, help="first N examples of each task")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=None)
    p.add_argument("--no-calib-data", action="store_true",
                   help="pass no calibration text (recipes with calibration.self_generated sample it from the model)")
    p.add_argument("--fake-quant", action="store_true",
                   help="evaluate the fake-quant graph (lower=False): the lowered graph's numbers to ~1e-4 "
                        "(tests/test_lowering.py), without the CPU references' fp64 int-GEMM emulation")
    args = p.parse_args()
    if args.task_data:
        zeroshot.check_tasks(["piqa", "hellaswag"], args.task_data)
    rows = []
    for preset in args.presets.split(","):
        rows.append(evaluate_preset(args, preset))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                           "torch": torch.__version__, "args": vars(args), "rows": rows}, f, indent=1)
    print(f"\n| preset | WikiText-2 PPL ({args.seq_len}) | P&P PPL | PIQA acc / norm | HellaSwag acc / norm | "
          "quantize s | eval s |")
    print("|---|---:|---:|---|---|---:|---:|")
    for r in rows:
        wiki = f"{r['wikitext2_ppl']:.3f}" if "wikitext2_ppl" in r else "–"
        task = lambda t: f"{r[t]['acc']:.4f} / {r[t]['acc_norm']:.4f}" if t in r else "–"  # noqa: E731
        print(f"| {r['preset']} | {wiki} | {r['austen_ppl']:.3f} | {task('piqa')} | {task('hellaswag')} | "
              f"{r['quantize_s']} | {r['ppl_s'] + r['zeroshot_s']:.0f} |")


if __name__ == "__main__":
    main()
