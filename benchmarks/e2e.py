"""End-to-end GPU benchmark: a Llama-3-8B-shaped model (random bf16 weights, built on the GPU from the config).

Greedy decode of 256 tokens after a 512-token prompt (batch 1, or `--batch B` prompts decoded together;
decode_tok_s counts the tokens of all of them), and a batch-1 4K-token prefill, for

- `bf16_eager`:   HF's plain loop over a DynamicCache (what `generate` does without compilation);
- `bf16_compile`: `torch.compile` (inductor), decode over a StaticCache with the step replayed as a CUDA graph;
- `w4a16`, `w4a16_all` (lm_head too), `w4a8`, `ternary`: `torch.compile(backend="qpass")` (quantized linears lowered to qpass.kernels,
  sibling linears stacked into one call, SDPA to `qpass::attention`, the rest to inductor), the same
  StaticCache + CUDA-graph decode loop as `bf16_compile`;
- `w4a16_generate`, `w4a8_generate`: the same recipes through the qpass backend with dynamic shapes, run by HF's
  plain loop over a DynamicCache like `bf16_eager` — what `generate` without CUDA graphs costs (issue 20);
- `<variant>_ro` (`bf16_compile_ro`, `w4a16_ro`, ...): the same compile with inductor's mode "reduce-overhead"
  (CUDA graphs recorded and replayed by torch itself, one per shape — the one-line way for a user's own loop);
  the decode loop then calls the compiled step directly instead of capturing it;
- `bf16_qpass`: the qpass backend with nothing quantized — the attention lowering's share of the gains;
- `w4a8_g64`: the `w4a8` preset (g64 int4 weights, dynamic int8 activations) through the backend;
- `w4a8_qsm`, `w4a4_qsm`, `w8a8_smooth`: the static presets (calibrated: `qpass.compile(..., compiler="inductor")`
  on random calibration tokens, RTN weights, no clip search — speed only).

The compiled variants share one decode loop (gpt-fast style): the step (model forward + argmax written back
into the input buffer) is captured once and replayed per token, so per-token Python and launch overhead is
gone for all of them alike. Prefills (the 512-token prompt, the 4K prefill) run the compiled model directly,
keeping logits for the last position only (`logits_to_keep=1`). `--ttft 128,512,2048` adds the time to first token
of prompts of those lengths (one forward of the prompt, no cache; each length warmed once). Writes
benchmarks/results/e2e_<gpu>.json.

    python benchmarks/e2e.py [--layers 32] [--variants bf16_eager,bf16_compile,w4a16,w4a8,ternary]
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import time

import torch
import transformers as tf

import qpass
from qpass.backend import forget
from qpass import ActivationSpec, PassSpec, Recipe, WeightSpec
from qpass.recipe import resolve

RECIPES = {
    "w4a16": Recipe("w4a16", weights=WeightSpec(bits=4, group_size=128)),
    # lm_head quantized too (qpass presets keep it in bf16; torchao's int4 weight-only and gpt-fast quantize it)
    "w4a16_all": Recipe("w4a16-all", weights=WeightSpec(bits=4, group_size=128), ignore=[]),
    # per-channel int4 weights, dynamic per-token int8 activations
    "w4a8": Recipe("w4a8-pc", weights=WeightSpec(bits=4, group_size=None), activations=ActivationSpec(bits=8, granularity="per_token")),
    # the w4a8 preset: g64 int4 weights (steps applied inside the int GEMM's K loop), dynamic per-token int8
    "w4a8_g64": "w4a8",
    # nothing quantized: what the qpass backend's attention lowering alone changes (kernels/attention/)
    # (a recipe must quantize something: every linear is ignored instead)
    "bf16_qpass": Recipe("attention-only", weights=WeightSpec(bits=4, group_size=128), ignore=["*"]),
    # speed only (random weights): few PTQTP iterations to keep the build short
    "ternary": Recipe("ternary", weights=None, passes=[PassSpec("trit_planes", {"group_size": 128, "max_iter": 3})]),
}
# Static low-bit activations (QSM) need calibration, which a torch.compile backend never sees: these variants go
# through qpass.compile(..., compiler="inductor") on a few random-token calibration batches. Speed only (random
# weights): RTN weights and no clip search keep the build short; the kernels and graph are the presets' own.
QSM_PRESETS = {"w4a8_qsm": "w4a8-qsm", "w4a4_qsm": "w4a4-qsm", "w8a8_smooth": "w8a8-smooth-g64"}
SPEED_ONLY = {"weights": {"rounding": "rtn"}, "calibration": {"num_samples": 4, "seq_len": 256}}


def qsm_recipe(preset: str) -> Recipe:
    d = resolve(preset).to_dict()
    for k, v in SPEED_ONLY.items():
        d[k] = {**d[k], **v}
    for p in d["passes"]:
        if p["name"] == "qsm":
            p["options"] = {**p["options"], "clip_search": False, "joint_clip": False}
    return Recipe.from_dict(d)


# transformers renamed the forward's cache argument (5.17: past_key_values; later: cache)
CACHE_KW = "cache" if "cache" in inspect.signature(tf.LlamaForCausalLM.forward).parameters else "past_key_values"


def llama3_8b_config(layers: int) -> tf.LlamaConfig:
    return tf.LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )


def build(cfg: tf.LlamaConfig, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = tf.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    return model.eval()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def settle():
    """Before a timed region: the device idle and the garbage of earlier work (a profile, a variant's build)
    collected, so no collection pauses the host mid-run (it showed as +5 ms on a 4K-token w4a8-qsm prefill whose
    host side is only ~8 ms ahead of its 22 ms of kernels; H100, 2026-12-07)."""
    gc.collect()
    sync()


def forward(model, ids, cache=None, last_only=True):
    kw = {CACHE_KW: cache, "use_cache": cache is not None}
    if last_only:
        kw["logits_to_keep"] = 1
    return model(input_ids=ids, **kw).logits[:, -1:].argmax(-1)


class GraphDecoder:
    """Greedy decode over a StaticCache, one CUDA-graph replay per token (the compiled variants).

    The captured step reads the token in `self.ids`, writes K/V at the cache's on-device position counter, and
    writes the argmax back into `self.ids`, so replays chain without any host work but the launch.
    """

    def __init__(self, model, max_len: int, device: str, batch: int = 1):
        # allocated eagerly: reduce-overhead needs the cache's tensors as static addresses (qpass/static_cache.py)
        self.model, self.cache = model, qpass.static_cache(model, max_len, batch)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.graph = None

    def _step(self):
        self.ids.copy_(forward(self.model, self.ids, self.cache))

    def prefill(self, prompt) -> None:
        self.cache.reset()
        self.ids.copy_(forward(self.model, prompt, self.cache))

    def capture(self, prompt) -> None:
        """Compile and warm the step on a side stream, then capture it (capture records, it does not run)."""
        self.prefill(prompt)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    def generate(self, prompt, new_tokens: int) -> tuple[float, float, torch.Tensor]:
        out = torch.empty(new_tokens + 1, dtype=torch.long, device=self.ids.device)
        settle()
        t0 = time.perf_counter()
        self.prefill(prompt)
        out[0] = self.ids[0, 0]
        sync()
        t1 = time.perf_counter()
        for i in range(new_tokens):
            self.graph.replay() if self.graph is not None else self._step()
            out[i + 1] = self.ids[0, 0]
        sync()
        return t1 - t0, time.perf_counter() - t1, out


@torch.no_grad()
def eager_generate(model, prompt, new_tokens: int) -> tuple[float, float, torch.Tensor]:
    """HF's plain loop over a DynamicCache (logits for the last position only, as generate asks)."""
    cache = tf.DynamicCache()
    out = torch.empty(new_tokens + 1, dtype=torch.long, device=prompt.device)
    settle()
    t0 = time.perf_counter()
    nxt = forward(model, prompt, cache)
    out[0] = nxt[0, 0]
    sync()
    t1 = time.perf_counter()
    for i in range(new_tokens):
        nxt = forward(model, nxt, cache)
        out[i + 1] = nxt[0, 0]
    sync()
    return t1 - t0, time.perf_counter() - t1, out


@torch.no_grad()
def prefill_time(model, ids) -> float:
    settle()
    t = time.perf_counter()
    forward(model, ids)
    sync()
    return time.perf_counter() - t


def profile_step(dec: GraphDecoder, prompt, long, name: str, args) -> None:
    """Kernel times of `args.profile` decode steps, launched without the graph (the graph hides its kernels
    from the profiler), of one prompt prefill (CPU time too: it is not a graph) and of one no-cache prefill of
    `long` (the --prefill tokens); written next to the JSON.
    Replay time vs summed kernel time = launch gaps."""
    from torch.profiler import ProfilerActivity, profile

    dec.prefill(prompt)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.profile):
            dec._step()
        sync()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    per_step_us = sum(e.device_time_total for e in events) / args.profile
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as pprof:
        dec.prefill(prompt)
        sync()
    ptable = pprof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    ctable = pprof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    with profile(activities=[ProfilerActivity.CUDA]) as lprof:
        forward(dec.model, long)
        sync()
    ltable = lprof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    with open(f"{os.path.splitext(args.out_path)[0]}.prof_{name}.txt", "w") as f:
        f.write(f"{name}: summed CUDA kernel time per decode step {per_step_us:.0f} us\n{table}\n\n"
                f"one {args.prompt}-token prompt prefill into the StaticCache, by CUDA time:\n{ptable}\n"
                f"by CPU time:\n{ctable}\n\none {long.shape[-1]}-token prefill without a cache, by CUDA time:\n"
                f"{ltable}\n")
    print(f"{name}: summed CUDA kernel time per decode step {per_step_us:.0f} us", flush=True)


@torch.no_grad()
def run_variant(name: str, base, cfg, args) -> tuple[dict, torch.Tensor]:
    t_build = time.perf_counter()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    ro = name.endswith("_ro")  # inductor's CUDA graphs ("reduce-overhead") instead of our captured step
    kind, mode = (name[:-len("_ro")], "reduce-overhead") if ro else (name, None)
    if kind == "bf16_eager":
        model = base
    elif kind == "bf16_compile":
        model = torch.compile(base, dynamic=False, mode=mode)
    elif kind in QSM_PRESETS:
        g = torch.Generator(device=args.device).manual_seed(2)
        calib = [torch.randint(0, cfg.vocab_size, (1, 256), device=args.device, generator=g) for _ in range(4)]
        model = qpass.compile(base, qsm_recipe(QSM_PRESETS[kind]), calib, progress=False, copy=True, compiler="inductor")
        s = qpass.report(model).summary()
        print(f"{name}: {s['lowered']} of {s['quantized']} quantized sites lowered; built in "
              f"{time.perf_counter() - t_build:.0f} s", flush=True)
    elif kind.endswith("_generate"):  # plain HF loop: a growing DynamicCache, so shapes are dynamic
        model = torch.compile(base, backend="qpass", options={"recipe": RECIPES[kind[:-len("_generate")]]},
                              dynamic=True)
    else:
        options = {"recipe": RECIPES[kind]} if mode is None else {"recipe": RECIPES[kind], "mode": mode}
        model = torch.compile(base, backend="qpass", options=options, dynamic=False)
    g = torch.Generator(device=args.device).manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt), device=args.device, generator=g)
    long = torch.randint(0, cfg.vocab_size, (1, args.prefill), device=args.device, generator=g)
    if kind == "bf16_eager" or kind.endswith("_generate"):
        gen = lambda: eager_generate(model, prompt, args.decode)  # noqa: E731
    else:
        dec = GraphDecoder(model, args.prompt + args.decode + 1, args.device, args.batch)
        if args.device == "cuda" and not ro:
            dec.capture(prompt)  # compiles prefill + decode graphs
        gen = lambda: dec.generate(prompt, args.decode)  # noqa: E731
    skips = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
    # warm-up (eager: allocator; compiled: compiled already). Twice: "reduce-overhead" runs a new shape once
    # eagerly and records its CUDA graph on the second call; only later calls replay.
    for _ in range(2):
        gen()
        prefill_time(model, long)  # compiles the no-cache prefill graph
    warm = time.perf_counter() - t_build
    runs = [gen() for _ in range(args.repeats)]
    ttft = {}
    for n in args.ttft:
        ids = torch.randint(0, cfg.vocab_size, (1, n), device=args.device, generator=g)
        for _ in range(2):
            prefill_time(model, ids)  # compiles / warms (records) this length
        ttft[n] = 1e3 * statistics.median(prefill_time(model, ids) for _ in range(args.repeats))
    pre = [prefill_time(model, long) for _ in range(args.repeats)]
    if args.profile and kind != "bf16_eager" and not ro and args.device == "cuda":
        profile_step(dec, prompt, long, name, args)
    dec_s = statistics.median(r[1] for r in runs)
    res = {
        "decode_tok_s": args.batch * args.decode / dec_s,  # all sequences of the batch
        "decode_ms_per_token": 1e3 * dec_s / args.decode,
        "prompt_prefill_ms": 1e3 * statistics.median(r[0] for r in runs),
        "prefill_ms": 1e3 * statistics.median(pre),
        "ttft_ms": ttft,
        # Dynamo graphs compiled in this variant (a plain loop that recompiled per step would show it here)
        "graphs_compiled": torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before,
        # graphs "reduce-overhead" ran without a CUDA graph (inductor logs why): > 0 means not all replayed
        "cudagraph_skips": torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] - skips,
        "build_compile_warmup_s": warm,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,  # build incl.
        # what stays allocated with the variant built and run (the shared bf16 base model included)
        "resident_mem_gib": torch.cuda.memory_allocated() / 2**30 if args.device == "cuda" else None,
        "repeat_decode_s": [r[1] for r in runs],
    }
    print(f"{name:>13}: {res['decode_tok_s']:.1f} tok/s decode, {res['prefill_ms']:.1f} ms prefill {args.prefill}, "
          f"warm-up {warm:.0f} s", flush=True)
    return res, runs[-1][2]


def add_ratios(variants: dict) -> None:
    for ref in ("bf16_eager", "bf16_compile", "bf16_compile_ro"):
        if "decode_tok_s" not in variants.get(ref, {}):
            continue
        for r in variants.values():
            if "decode_tok_s" in r:
                r[f"decode_speedup_vs_{ref}"] = r["decode_tok_s"] / variants[ref]["decode_tok_s"]
                r[f"prefill_speedup_vs_{ref}"] = variants[ref]["prefill_ms"] / r["prefill_ms"]
                r[f"ttft_speedup_vs_{ref}"] = {n: variants[ref]["ttft_ms"][n] / ms for n, ms in r["ttft_ms"].items()
                                                if n in variants[ref].get("ttft_ms", {})}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1, help="sequences decoded together (the prefills stay batch 1)")
    ap.add_argument("--prefill", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ttft", default="", help="prompt lengths whose time to first token to measure, e.g. 128,512,2048")
    ap.add_argument("--variants", default="bf16_eager,bf16_compile,w4a16,w4a8,ternary")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip remaining variants past this wall time")
    ap.add_argument("--profile", type=int, default=0, help="profile N decode steps of each compiled variant (CUDA)")
    ap.add_argument("--tiny", action="store_true", help="a small config (CPU smoke test of the script)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.ttft = [int(n) for n in args.ttft.split(",") if n]
    cfg = llama3_8b_config(args.layers)
    if args.tiny:
        cfg = tf.LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=args.layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    # cuDNN's SDPA builds a new plan per KV length (≈31 ms CPU per call seen on the H100, torch 2.11): off for all.
    torch.backends.cuda.enable_cudnn_sdp(False)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"e2e_{gpu.replace(' ', '_')}.json")
    args.out_path = out
    start = time.perf_counter()
    base = build(cfg, args.device)
    result = {
        "gpu": gpu, "torch": torch.__version__, "transformers": tf.__version__,
        "model": f"{'tiny Llama' if args.tiny else 'Llama-3-8B shapes'}, {args.layers} layers, random bf16 weights",
        "command": "python benchmarks/e2e.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, []) and k not in ("device", "tiny", "out_path")),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "out_path")}, "variants": {}, "skipped": [],
    }
    tokens = {}
    for name in args.variants.split(","):
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(name)
            continue
        try:
            result["variants"][name], tokens[name] = run_variant(name, base, cfg, args)
        except Exception as e:  # report and go on: one failing variant must not lose the others
            result["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            print(f"{name}: FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
        torch._dynamo.reset()
        forget(base)  # the qpass backend keeps plans and packed weights per weight tensor: not across variants
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        add_ratios(result["variants"])
        # sanity: greedy tokens of each variant against bf16 eager (bf16 + compile should agree for a while)
        if "bf16_eager" in tokens and name in tokens:
            same = (tokens[name] == tokens["bf16_eager"]).int().cumprod(0).sum().item()
            result["variants"][name]["tokens_equal_to_bf16_eager_prefix"] = same
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"\n{'variant':>16} | tok/s | vs eager | vs compile | vs compile_ro | prefill ms | vs compile | warm-up s")
    for name, r in result["variants"].items():
        if "decode_tok_s" in r:
            print(f"{name:>16} | {r['decode_tok_s']:6.1f} | {_ratio(r.get('decode_speedup_vs_bf16_eager'))} | "
                  f"{_ratio(r.get('decode_speedup_vs_bf16_compile'))} | "
                  f"{_ratio(r.get('decode_speedup_vs_bf16_compile_ro'))} | {r['prefill_ms']:8.1f} | "
                  f"{_ratio(r.get('prefill_speedup_vs_bf16_compile'))} | {r['build_compile_warmup_s']:.0f}")
    if args.ttft:
        print(f"\n{'variant':>16} | " + " | ".join(f"TTFT {n} ms (vs compile, vs compile_ro)" for n in args.ttft))
        for name, r in result["variants"].items():
            if "ttft_ms" in r:
                print(f"{name:>16} | " + " | ".join(
                    f"{r['ttft_ms'][n]:7.2f} ({_ratio(r.get('ttft_speedup_vs_bf16_compile', {}).get(n))}, "
                    f"{_ratio(r.get('ttft_speedup_vs_bf16_compile_ro', {}).get(n))})" for n in args.ttft))


def _ratio(value) -> str:
    """A speed-up for the tables, or a dash where its baseline was not in this run."""
    return "    –" if value is None else f"{value:.2f}x"

if __name__ == "__main__":
    main()
