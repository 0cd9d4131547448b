"""SALE accuracy on a sliding-window model (CPU, reference path): SmolLM2-135M's weights in a Mistral model (the
same architecture plus a sliding window W), τ calibrated by the `sale` pass on *Emma* against the windowed
attention, evaluated on *Pride and Prejudice*: lowered (`qpass.compile`) vs the model's own logits, perplexity,
and the share of in-window blocks skipped.

    python benchmarks/sale_window_accuracy.py [--window 1024] [--ctx 2048] [--calib 2048] [--theta 0.25]

Writes benchmarks/results/sale_window_accuracy_cpu.json (--out).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import qpass
import qpass.models
from qpass.data import austen_tokens
from qpass.passes.sale import SaleOptions, use_sale
from qpass.recipe import PassSpec, Recipe


def as_windowed(llama, window: int):
    """The same weights in a Mistral model (Llama's architecture with a sliding window)."""
    import transformers as tf

    d = llama.config.to_dict()
    d.update(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=window)
    model = tf.MistralForCausalLM(tf.MistralConfig.from_dict(d)).eval()
    missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    model.tie_weights()
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--calib", type=int, default=2048)
    ap.add_argument("--theta", type=float, default=0.25)
    ap.add_argument("--tau-init", type=float, default=0.256)
    ap.add_argument("--block", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/sale_window_accuracy_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    llama, tok = qpass.models.load("smollm2")
    model = as_windowed(llama, a.window)
    ids = austen_tokens(tok, "prideprejudice", a.ctx)[None]
    with torch.no_grad():  # the conversion is exact: with a window ≥ the context, Mistral == Llama
        full = llama(input_ids=ids[:, :256], use_cache=False).logits
        model.config.sliding_window = 4096
        same = model(input_ids=ids[:, :256], use_cache=False).logits
        model.config.sliding_window = a.window
    assert torch.allclose(full, same, atol=1e-4), float((full - same).abs().max())

    opts = dict(block_m=a.block[0], block_n=a.block[1], calib_tokens=a.calib, tau_init=a.tau_init, theta=a.theta,
                min_seq_len=0)
    recipe = Recipe("sale-window", weights=None, passes=[PassSpec("sale", opts)])
    t0 = time.time()
    qm = qpass.compile(model, recipe, [austen_tokens(tok, "emma", a.calib)[None]], progress=False, copy=True)
    t_cal = time.time() - t0
    plan = qm.qpass_state.plan.attention
    taus = {n: p.taus for n, p in plan.items()}
    windows = sorted({p.options.model_window for p in plan.values()}, key=str)
    with torch.no_grad():
        own = model(input_ids=ids, use_cache=False).logits.float()
        t0 = time.time()
        low = qm(input_ids=ids, use_cache=False).logits.float()
        t_low = time.time() - t0
        with use_sale(model, "sale", SaleOptions(**opts), taus) as ctx:
            eager = model(input_ids=ids, use_cache=False).logits.float()
    st = ctx.stats
    kept = sum(v["kept"] for v in st.values()) / sum(v["causal"] for v in st.values())

    def ppl(logits):
        return math.exp(float(F.cross_entropy(logits[0, :-1], ids[0, 1:])))

    heads = [t for v in taus.values() for t in v]
    res = {"command": "python benchmarks/sale_window_accuracy.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(a).items()),
        "model": "SmolLM2-135M-Instruct (dequantized from Q4_1) weights in MistralForCausalLM, sliding_window "
                 f"{a.window}", "device": "CPU (reference path)", "plan_windows": windows,
        "calib": f"{a.calib} tokens of Emma", "eval": f"{a.ctx} tokens of Pride and Prejudice (one window)",
        "logits_rel_l2_lowered_vs_own": float((low - own).norm() / own.norm()),
        "logits_max_abs_lowered_vs_own": float((low - own).abs().max()),
        "logits_rel_l2_lowered_vs_eager_sale": float((low - eager).norm() / eager.norm()),
        "ppl_own": ppl(own), "ppl_lowered": ppl(low),
        "in_window_blocks_skipped_pct": 100 * (1 - kept), "attn_out_rel_l1": sum(v["l1"] for v in st.values())
        / sum(v["norm"] for v in st.values()),
        "tau_median": sorted(heads)[len(heads) // 2], "dense_heads": sum(t <= 1e-4 for t in heads),
        "heads": len(heads), "calibrate_s": round(t_cal, 1), "lowered_forward_s": round(t_low, 1),
        "report_log": [line for line in qpass.report(qm).log if line.startswith("sale")]}
    res["ppl_change_pct"] = 100 * (res["ppl_lowered"] / res["ppl_own"] - 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
