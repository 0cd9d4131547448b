"""Block-by-block quantization of a Llama-3-8B-shaped model (random bf16 weights kept on the CPU, each block
computed on the GPU in its turn): wall time, peak GPU memory and peak RSS per recipe (issue 19 targets: ≤ 15 min
and ≤ 12 GB GPU each on one H100/H200).

    PYTHONPATH=. python benchmarks/quantize_blockwise.py                       # 8B shape, w4a16-gptq and w4a4-qsm
    PYTHONPATH=. python benchmarks/quantize_blockwise.py --layers 4            # a smaller variant
    PYTHONPATH=. python benchmarks/quantize_blockwise.py --device cpu --layers 2 --hidden 256 --heads 4 \
        --kv-heads 2 --intermediate 512 --vocab 1024 --samples 4 --seq-len 64   # a CPU smoke run

Each recipe runs in a child process of its own, so its peak RSS (ru_maxrss) is its own; a table is printed and,
when $OUT is set, written as JSON ($OUT/quantize_blockwise.json). Planning only (`lower=False`): lowering is
measured by benchmarks/e2e.py.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def build(args):
    """A LlamaForCausalLM with random bf16 weights on the CPU: created on the meta device, then storage
    allocated (to_empty) and filled in place — no fp32 initialisation pass over 8 B parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=args.vocab,
                      max_position_embeddings=max(8192, args.seq_len), tie_word_embeddings=False,
                      torch_dtype=torch.bfloat16)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.to_empty(device="cpu")
    # random numbers drawn on the compute device when it is a GPU (the CPU took 250 s for 8 B of them)
    fill = torch.device(args.device)
    gen = torch.Generator(device=fill).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm scales
                p.fill_(1.0)
            else:
                p.copy_(torch.empty(p.shape, dtype=p.dtype, device=fill).normal_(0.0, 0.02, generator=gen))
        # non-persistent buffers (RoPE's inv_freq) hold garbage after to_empty: rebuild those modules on the CPU
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if hasattr(child, "inv_freq"):
                    setattr(parent, child_name, type(child)(config=cfg))
    return model.eval()


def run_one(args) -> dict:
    import torch

    import qpass

    device = torch.device(args.device)
    t = time.perf_counter()
    model = build(args)
    build_s = time.perf_counter() - t
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.samples, args.seq_len), generator=gen)
    calib = list(ids.split(args.batch))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    q = qpass.compile(model, args.one, calib, lower=False, device=device, progress=not args.quiet)
    wall = time.perf_counter() - t
    plan = q.qpass_state.plan
    for b in plan.blocks:
        print(b.describe(), flush=True)
    return {
        "recipe": args.one, "layers": args.layers, "hidden": args.hidden, "device": str(device),
        "build_seconds": round(build_s, 1), "quantize_seconds": round(wall, 1),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "quantized_sites": len(plan.quantized()), "full_precision": len(plan.skipped),
        "block_seconds": [round(b.seconds, 2) for b in plan.blocks],
        "path": plan.log[0] if plan.log else "",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="w4a16-gptq,w4a4-qsm")
    ap.add_argument("--device", default="cuda", help="where each block computes (weights stay on the CPU)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--samples", type=int, default=32, help="calibration sequences")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8, help="calibration sequences per forward")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child process: run this recipe, print its JSON
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("quantize_blockwise: --device cuda but torch sees no CUDA device (torch "
                     f"{torch.__version__}); give --device cpu for a small CPU run (--layers 2 --hidden 256 ...)")
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    rows = []
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        # the child's progress and errors stream through (a long run shows where it is); its result comes back
        # as the last RESULT line of its stdout
        cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--one", recipe]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = None
        for out in proc.stdout:
            if out.startswith("RESULT "):
                line = out
            else:
                print(out, end="", flush=True)
        if proc.wait() or line is None:
            sys.exit(f"quantize_blockwise: {recipe} failed (exit {proc.returncode})")
        rows.append(json.loads(line[len("RESULT "):]))
        print(f"{recipe}: {rows[-1]['quantize_seconds']} s, peak GPU {rows[-1]['peak_gpu_gb']} GB, "
              f"peak RSS {rows[-1]['peak_rss_gb']} GB", flush=True)
    print(f"\n{'recipe':<14} {'layers':>6} {'wall s':>8} {'peak GPU GB':>12} {'peak RSS GB':>12} {'sites':>6}")
    for r in rows:
        gpu = f"{r['peak_gpu_gb']:.2f}" if r["peak_gpu_gb"] is not None else "-"
        print(f"{r['recipe']:<14} {r['layers']:>6} {r['quantize_seconds']:>8.1f} {gpu:>12} {r['peak_rss_gb']:>12.2f} "
              f"{r['quantized_sites']:>6}")
    if os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "quantize_blockwise.json")
        with open(path, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=1)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
