"""End-to-end GPU benchmark: a Llama-3-8B-shaped model (random bf16 weights, built on the GPU from the config).

Batch-1 greedy decode of 256 tokens after a 512-token prompt, and a 4K-token prefill, for bf16 eager,
bf16 + torch.compile, and qpass w4a16 / w4a8 / ternary through torch.compile(backend="qpass") (quantized
linears lowered to qpass.kernels, the rest to inductor). Writes benchmarks/results/e2e_<gpu>.json (or --out).

    python benchmarks/e2e.py [--layers 32] [--variants bf16_eager,bf16_compile,w4a16,w4a8,ternary]

Decode runs a plain loop over HF's DynamicCache (no CUDA graphs, no static cache): per-token Python and
launch overhead is included and the same for every variant.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import transformers as tf

import qpass
from qpass import ActivationSpec, PassSpec, Recipe, WeightSpec

RECIPES = {
    "w4a16": Recipe("w4a16", weights=WeightSpec(bits=4, group_size=128)),
    # the W4A8 kernel takes one weight scale per output row: per-channel int4 weights, dynamic per-token int8
    "w4a8": Recipe("w4a8-pc", weights=WeightSpec(bits=4, group_size=None), activations=ActivationSpec(bits=8, granularity="per_token")),
    # speed only (random weights): few PTQTP iterations to keep the build short
    "ternary": Recipe("ternary", weights=None, passes=[PassSpec("trit_planes", {"group_size": 128, "max_iter": 3})]),
}


def llama3_8b_config(layers: int) -> tf.LlamaConfig:
    return tf.LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )


def build(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = llama3_8b_config(layers)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = tf.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    return model.eval()


def sync_time(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


@torch.no_grad()
def greedy(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds for new_tokens tokens)."""
    cache = tf.DynamicCache()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    nxt = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    return t1 - t0, time.perf_counter() - t1


@torch.no_grad()
def prefill(model, ids: torch.Tensor) -> float:
    return sync_time(lambda: model(input_ids=ids, past_key_values=tf.DynamicCache(), use_cache=True))


def run_variant(name: str, base, args) -> dict:
    t_build = time.perf_counter()
    if name == "bf16_eager":
        model = base
    elif name == "bf16_compile":
        model = torch.compile(base, dynamic=True)
    else:
        model = torch.compile(base, backend="qpass", options={"recipe": RECIPES[name]}, dynamic=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, 128256, (1, args.prompt), device="cuda", generator=g)
    long = torch.randint(0, 128256, (1, args.prefill), device="cuda", generator=g)
    greedy(model, prompt, 8)  # warm-up: compiles the prefill and decode graphs
    prefill(model, long)
    warm = time.perf_counter() - t_build
    runs = [greedy(model, prompt, args.decode) for _ in range(args.repeats)]
    pre = [prefill(model, long) for _ in range(args.repeats)]
    dec = statistics.median(r[1] for r in runs)
    res = {
        "decode_tok_s": args.decode / dec,
        "decode_ms_per_token": 1e3 * dec / args.decode,
        "prompt_prefill_ms": 1e3 * statistics.median(r[0] for r in runs),
        "prefill_4k_ms": 1e3 * statistics.median(pre),
        "build_compile_warmup_s": warm,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(f"{name:>13}: {res['decode_tok_s']:.1f} tok/s decode, {res['prefill_4k_ms']:.1f} ms prefill {args.prefill}, "
          f"warm-up {warm:.0f} s", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=256)
    ap.add_argument("--prefill", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="bf16_eager,bf16_compile,w4a16,w4a8,ternary")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip remaining variants past this wall time")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    # cuDNN's SDPA builds a new plan for every new KV length (≈31 ms CPU per call seen on the H100, torch 2.11):
    # batch-1 decode over a growing DynamicCache measured that, not the model. Same setting for every variant.
    torch.backends.cuda.enable_cudnn_sdp(False)
    gpu = torch.cuda.get_device_name()
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"e2e_{gpu.replace(' ', '_')}.json")
    start = time.perf_counter()
    base = build(args.layers)
    result = {
        "gpu": gpu, "torch": torch.__version__, "model": f"Llama-3-8B shapes, {args.layers} layers, random bf16 weights",
        "command": "python benchmarks/e2e.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "settings": {k: v for k, v in vars(args).items() if k != "out"}, "variants": {}, "skipped": [],
    }
    for name in args.variants.split(","):
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(name)
            continue
        try:
            result["variants"][name] = run_variant(name, base, args)
        except Exception as e:  # report and go on: one failing variant must not lose the others
            result["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            print(f"{name}: FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
        torch._dynamo.reset()
        for p in base.parameters():  # the qpass backend keeps plans on the weights: drop them between variants
            p.__dict__.pop("_qpass_plans", None)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        v = result["variants"]
        for ref in ("bf16_eager", "bf16_compile"):
            if "decode_tok_s" in v.get(ref, {}):
                for r in v.values():
                    if "decode_tok_s" in r:
                        r[f"decode_speedup_vs_{ref}"] = r["decode_tok_s"] / v[ref]["decode_tok_s"]
                        r[f"prefill_speedup_vs_{ref}"] = v[ref]["prefill_4k_ms"] / r["prefill_4k_ms"]
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
