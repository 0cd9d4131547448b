"""Record real attention inputs for the GPU benchmark: SmolLM2-135M's q, k, v (after RoPE, as SDPA receives them)
at chosen layers over Pride and Prejudice, with each head's SALE τ from a calibration JSON of
benchmarks/sale_smollm2.py. CPU only; `benchmarks/attention.py --recorded FILE` tiles them to GPU lengths.

    python benchmarks/record_smollm2_attention.py --calib-json benchmarks/results/sale_smollm2_cpu_8k_b128_pool8.json \
        --layers 2 12 --tokens 8192 --out /tmp/smollm2_attention.safetensors

The tensors are fp16 (q [1, 9, T, 64], k / v [1, 3, T, 64] per layer; ~16 MB per layer at 8K): kept out of git.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import qpass.models
from qpass.data import austen_tokens
from qpass.passes.sale import choose_taus


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-json", required=True, help="a sale_smollm2.py result: its τ tables and options")
    ap.add_argument("--theta", type=float, default=0.25)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 12])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    calib = json.loads(Path(a.calib_json).read_text())
    opts, table = calib["options"], calib["calibration"]["tables"]
    ladder = calib["calibration"]["ladder"]
    model, tok = qpass.models.load("smollm2")
    ids = austen_tokens(tok, "prideprejudice", a.tokens)[None]
    recorded, calls = {}, [0]
    sdpa = F.scaled_dot_product_attention

    def record(q, k, v, *args, **kwargs):  # SDPA is called once per layer, in layer order
        layer = calls[0]
        calls[0] += 1
        if layer in a.layers:
            for name, t in (("q", q), ("k", k), ("v", v)):
                recorded[f"layer{layer}.{name}"] = t.detach().to(torch.float16).contiguous()
        return sdpa(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = record
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        F.scaled_dot_product_attention = sdpa
    meta = {"model": "SmolLM2-135M-Instruct", "text": "Pride and Prejudice", "tokens": str(a.tokens),
            "calib_json": a.calib_json, "theta": str(a.theta), "options": json.dumps(opts),
            "pool": str(calib["calibration"].get("pool", 1))}
    for layer in a.layers:
        l1 = torch.tensor(table[f"model.layers.{layer}.self_attn"]["l1"])
        taus = choose_taus(l1, ladder, a.theta, opts["tau_dense"])
        recorded[f"layer{layer}.tau"] = torch.tensor(taus, dtype=torch.float32)
    save_file(recorded, a.out, metadata=meta)
    print(f"wrote {a.out}: layers {a.layers}, {a.tokens} tokens, {calls[0]} SDPA calls seen")


if __name__ == "__main__":
    main()
