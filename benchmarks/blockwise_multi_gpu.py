"""Block-by-block calibration of a model that accelerate dispatched over every visible GPU (issue 19: "with several
GPUs, blocks spread over them"): each block is calibrated and quantized on the GPU it lives on, and the result
must equal the same model quantized on one GPU.

    PYTHONPATH=. python benchmarks/blockwise_multi_gpu.py                 # a 8-block Llama, hidden 1024
    PYTHONPATH=. python benchmarks/blockwise_multi_gpu.py --layers 32 --hidden 4096 --intermediate 14336

Prints, per recipe: the devices the plan's log names, the time, the peak memory of each GPU, whether every
packed weight equals the one-GPU plan's, and the relative logit difference of the two lowered models. With one
GPU the comparison still runs (both on cuda:0). JSON to $OUT/blockwise_multi_gpu.json when $OUT is set.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
                      num_key_value_heads=max(1, args.hidden // 512), intermediate_size=args.intermediate,
                      vocab_size=args.vocab, max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def device_map(n_layers: int, gpus: int) -> dict[str, int]:
    """Contiguous runs of blocks per GPU (as accelerate's "balanced" maps place them); embeddings on the first,
    the head on the last."""
    dm = {f"model.layers.{i}": i * gpus // n_layers for i in range(n_layers)}
    return {"model.embed_tokens": 0, "model.rotary_emb": 0, **dm, "model.norm": gpus - 1, "lm_head": gpus - 1}


def main() -> None:
    from accelerate import dispatch_model

    import qpass

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="w4a16-gptq,w4a4-qsm")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=3584)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    gpus = torch.cuda.device_count()
    if not gpus:
        raise SystemExit("blockwise_multi_gpu: no CUDA device")
    gen = torch.Generator().manual_seed(1)
    calib = list(torch.randint(0, args.vocab, (args.samples, args.seq_len), generator=gen).split(8))
    ids = torch.randint(0, args.vocab, (2, 128), generator=gen)
    base = build(args)
    rows = []
    for recipe in args.recipes.split(","):
        one = copy.deepcopy(base).to("cuda:0")
        q_one = qpass.compile(one, recipe, [c.cuda() for c in calib], progress=False)
        spread = dispatch_model(copy.deepcopy(base), device_map(args.layers, gpus), main_device="cuda:0")
        for g in range(gpus):
            torch.cuda.reset_peak_memory_stats(g)
        t = time.perf_counter()
        q_spread = qpass.compile(spread, recipe, calib, progress=False)
        seconds = time.perf_counter() - t
        a, b = q_one.qpass_state.plan, q_spread.qpass_state.plan
        same = all(torch.equal(a.sites[n].weight.qweight.cpu(), b.sites[n].weight.qweight.cpu())
                   for n in a.sites if a.sites[n].weight is not None)
        with torch.no_grad():
            x, y = q_spread(ids.cuda()).logits.float().cpu(), q_one(ids.cuda()).logits.float().cpu()
        rows.append({"recipe": recipe, "gpus": gpus, "gpu": torch.cuda.get_device_name(0), "log": b.log[0],
                     "seconds": round(seconds, 1), "sites": len(b.quantized()), "same_weights": same,
                     "logits_rel_diff": float((x - y).norm() / y.norm()),
                     "peak_gb": [round(torch.cuda.max_memory_allocated(g) / 2**30, 2) for g in range(gpus)],
                     "lowered": sum(1 for how in q_spread.qpass_state.lowering.values()
                                    if not str(how).startswith("unmatched"))})
        print(json.dumps(rows[-1]), flush=True)
        del one, q_one, spread, q_spread
        torch.cuda.empty_cache()
    print(f"\n{'recipe':<12} {'gpus':>4} {'s':>6} {'same W':>7} {'logit diff':>11}  peak GB per GPU")
    for r in rows:
        print(f"{r['recipe']:<12} {r['gpus']:>4} {r['seconds']:>6.1f} {str(r['same_weights']):>7} "
              f"{r['logits_rel_diff']:>11.2e}  {r['peak_gb']}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "blockwise_multi_gpu.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
