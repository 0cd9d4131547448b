"""Data-free W4A16 quantizers on weight statistics our two real models (both Llamas) do not have: tiny random
models of other families (tests/tiny_models.py) whose linear weights are redrawn as Gaussian, heavy-tailed
(Student-t, 3 degrees of freedom) or Gaussian with outlier input channels (2 % of columns ×10), then quantized per
method. Measured: relative weight error, mean relative output error per site on the inputs the FP model sees
(random tokens), relative error of the logits.

    python benchmarks/w4a16_synthetic.py   ->  benchmarks/results/w4a16_synthetic.json"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import tiny_model  # noqa: E402

from qpass.numerics import quantize_weight  # noqa: E402

METHODS = {"sym": (True, "none"), "asym": (False, "none"), "sym+mse": (True, "mse"), "asym+mse": (False, "mse")}


def redraw(w: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    std = 0.02
    if kind == "gaussian":
        return torch.randn(w.shape, generator=gen) * std
    if kind == "student_t3":
        t = torch.distributions.StudentT(3.0).sample(w.shape)  # heavy tails, like trained LLM weights
        return t * std / 3 ** 0.5
    if kind == "outlier_channels":
        out = torch.randn(w.shape, generator=gen) * std
        cols = torch.randperm(w.shape[1], generator=gen)[: max(1, w.shape[1] // 50)]
        out[:, cols] *= 10
        return out
    raise ValueError(kind)


@torch.no_grad()
def measure(arch: str, kind: str, group: int) -> dict:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = tiny_model(arch)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")}
    for m in linears.values():
        m.weight.copy_(redraw(m.weight, kind, gen))
    ids = torch.randint(3, model.config.vocab_size, (2, 64), generator=gen)
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: inputs.__setitem__(n, a[0].detach().reshape(-1, a[0].shape[-1])))
             for n, m in linears.items()]
    ref = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    original = {n: m.weight.clone() for n, m in linears.items()}
    row = {"arch": arch, "weights": kind, "group": group}
    for name, (sym, search) in METHODS.items():
        werr, oerr = [], []
        for n, m in linears.items():
            w = original[n]
            wq = quantize_weight(w, 4, group, sym, 1.0, search).dequantize()
            werr.append(float((wq - w).norm() / w.norm()))
            x = inputs[n]
            oerr.append(float((x @ (wq - w).T).norm() / (x @ w.T).norm()))
            m.weight.copy_(wq)
        logits = model(input_ids=ids).logits
        row[name] = {"weight_rel_err": sum(werr) / len(werr), "output_rel_err": sum(oerr) / len(oerr),
                     "logits_rel_err": float((logits - ref).norm() / ref.norm())}
        for n, m in linears.items():
            m.weight.copy_(original[n])
    return row


def main() -> None:
    rows = []
    for arch in ("qwen3", "gemma3", "phi3", "opt"):
        for kind in ("gaussian", "student_t3", "outlier_channels"):
            for group in (32, 64):
                row = measure(arch, kind, group)
                rows.append(row)
                print(arch, kind, f"g{group}", "  ".join(f"{m}: w {row[m]['weight_rel_err']:.4f} "
                      f"out {row[m]['output_rel_err']:.4f} logits {row[m]['logits_rel_err']:.4f}" for m in METHODS),
                      flush=True)
    dest = Path(__file__).parent / "results" / "w4a16_synthetic.json"
    dest.write_text(json.dumps(rows, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
