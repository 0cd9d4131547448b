"""A checkpoint written by llm-compressor itself, read by qpass: GPTQ W4A16 (int4 symmetric g64, lm_head kept) on
SmolLM2 with llm-compressor's `oneshot`, calibrated on qpass's 32 × 512 tokens of *Emma*, saved compressed; then
its perplexity on docs/results.md's protocol through transformers and through `qpass.load` (qpass kernels).

Needs llm-compressor in the environment (it pins transformers <= 5.17: use a venv of its own, with qpass installed
`--no-deps`):

    python benchmarks/llmcompressor_import.py OUT_DIR
"""
from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder the compressed checkpoint is written to")
    args = p.parse_args()

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM

    import qpass
    from qpass import data, models
    from qpass.evaluate import perplexity

    model, tok = models.load("smollm2")
    ids = torch.cat(data.calibration_batches(tok, "emma", 32, 512))
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    group = {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                                "group_size": 64}}
    start, cpu = time.time(), time.process_time()
    oneshot(model=model, dataset=ds, recipe=GPTQModifier(ignore=["lm_head"], config_groups={"group_0": group}),
            max_seq_length=512, num_calibration_samples=32)
    print(f"llm-compressor oneshot: {time.time() - start:.0f} s wall, {time.process_time() - cpu:.0f} s CPU, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB", flush=True)
    model.save_pretrained(args.out, save_compressed=True)
    tok.save_pretrained(args.out)

    text = data.austen_tokens(tok, "prideprejudice", 8192)
    through_transformers = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    print(f"PPL through transformers: {perplexity(through_transformers, text, 512, progress=False):.6f}", flush=True)
    through_qpass = qpass.load(args.out)
    lowered = sum(v != "attention" for v in through_qpass.qpass_state.lowering.values())
    print(f"PPL through qpass ({lowered} sites on qpass kernels): "
          f"{perplexity(through_qpass, text, 512, progress=False):.6f}", flush=True)


if __name__ == "__main__":
    main()
