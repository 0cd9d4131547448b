"""Lowered vs fake-quant logits of the static presets on the GPU (Triton kernels), on a small random Llama.

The CPU tests compare the lowered graph (kernel references) with the fake-quant graph; this runs the same
comparison where the lowered ops are the Triton kernels: quantizer with zero points and gather, int GEMMs with
per-group steps, guarded rows. Prints one line per (preset, dtype) and writes JSON to --out.

    python benchmarks/lowered_vs_fake.py [--presets w4a4-qsm,w4a8-qsm,...] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers as tf  # noqa: E402

import qpass  # noqa: E402

PRESETS = "w4a4-qsm,w4a8-qsm,w8a8-smooth,w8a8-smooth-g64,w4a8,w8a8"


def small_llama(dtype, device):
    cfg = tf.LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1408, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default=PRESETS)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(1)
    calib = [torch.randint(0, 1024, (2, 128), generator=g).to(device) for _ in range(2)]
    ids = torch.randint(0, 1024, (2, 200), generator=g).to(device)
    one = ids[:1, :1]
    rows = []
    for dt in args.dtypes.split(","):
        model = small_llama(getattr(torch, dt), device)
        for preset in args.presets.split(","):
            fake = qpass.compile(model, preset, calib, progress=False, copy=True, lower=False)
            low = qpass.compile(model, preset, calib, progress=False, copy=True)
            s = qpass.report(low).summary()
            with torch.no_grad():
                ref, out = fake(ids).logits.float(), low(ids).logits.float()
                r1, o1 = fake(one).logits.float(), low(one).logits.float()  # one row: the decode kernels
            row = dict(preset=preset, dtype=dt, device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                       lowered=s["lowered"], quantized=s["quantized"],
                       rel_err=float((out - ref).norm() / ref.norm()), rel_err_one_row=float((o1 - r1).norm() / r1.norm()),
                       argmax_agree=float((out.argmax(-1) == ref.argmax(-1)).float().mean()))
            rows.append(row)
            print(f"{preset:>16} {dt:>9}: lowered {row['lowered']}/{row['quantized']}, rel err {row['rel_err']:.2e} "
                  f"(one row {row['rel_err_one_row']:.2e}), argmax agree {row['argmax_agree']:.3f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
