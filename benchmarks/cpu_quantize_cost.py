"""CPU cost of GPTQ W4A16 (int4 g64) on SmolLM2, qpass against llm-compressor, measured the same way (issue 19:
peak RSS ≤ 1.6 GB and CPU time ≤ llm-compressor's).

    python benchmarks/cpu_quantize_cost.py qpass            # qpass.compile(model, "w4a16-gptq", calib), lowered
    python benchmarks/cpu_quantize_cost.py llmcompressor    # oneshot(GPTQModifier int4 sym g64), in a venv with it

Both load SmolLM2 in fp32 through `qpass.models` and calibrate on the same 32 × 512 tokens of *Emma*; the figures
are the process's CPU time (user + system, all threads) spent inside the quantization call, its wall time, and the
process's peak RSS over the whole run (load + quantization). Run the two one after the other on the same machine:
one JSON line each.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=["qpass", "llmcompressor"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from qpass import data, models

    model, tok = models.load("smollm2")
    calib = data.calibration_batches(tok, "emma", 32, 512)
    cpu, wall = time.process_time(), time.perf_counter()
    if args.tool == "qpass":
        import qpass

        q = qpass.compile(model, "w4a16-gptq", calib, progress=False)
        sites = len(q.qpass_state.plan.quantized())
    else:
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.gptq import GPTQModifier

        ids = torch.cat(calib)
        ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
        group = {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                    "strategy": "group", "group_size": 64}}
        oneshot(model=model, dataset=ds, recipe=GPTQModifier(ignore=["lm_head"], config_groups={"group_0": group}),
                max_seq_length=512, num_calibration_samples=32)
        sites = sum(1 for m in model.modules() if hasattr(m, "weight_scale"))
    print(json.dumps({"tool": args.tool, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "quantize_cpu_s": round(time.process_time() - cpu, 1),
                      "quantize_wall_s": round(time.perf_counter() - wall, 1),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "sites": sites}), flush=True)


if __name__ == "__main__":
    main()
