"""Mixed precision by sensitivity: the allocation meets its budget, more sensitive sites get at least as many
bits, and a model with 2/3/4/8/16-bit sites lowers to the kernels and matches its fake-quant graph."""
from __future__ import annotations

import re

import pytest
import torch

import qpass
from qpass.allocation import SiteCost, allocate, average_bits, bits_per_weight
from qpass.cli import with_mixed_precision
from qpass.lowering.lower import quantize_transform
from qpass.recipe import Recipe, RecipeError, WeightSpec, resolve
from qpass.capture import compile_forward
from tests.tiny_models import tiny_model


def _calib(n=4, t=32, seed=1):
    return [torch.randint(0, 256, (1, t), generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]


def _recipe(**opts):
    base = Recipe("g32", weights=WeightSpec(bits=4, group_size=32, symmetric=False))
    return with_mixed_precision(base, opts.get("target_bits"), opts.get("max_ppl_increase"))


def test_bits_per_weight_counts_scales_and_zeros():
    assert bits_per_weight(4, 128, 64, symmetric=False) == 4 + 2 * (16 + 4) / 128
    assert bits_per_weight(8, 128, None, symmetric=True) == 8 + 16 / 128
    assert bits_per_weight(3, 128, 64, symmetric=False, storage=True) == 4 + 2 * (16 + 4) / 128  # int4 container
    assert bits_per_weight(16, 128, 64, symmetric=False) == 16


def test_allocation_meets_budget_and_orders_by_sensitivity():
    gen = torch.Generator().manual_seed(0)
    sens = torch.rand(12, generator=gen) * 10 + 0.1
    sites = []
    for i, s in enumerate(sens.tolist()):  # equal sizes; error halves per extra bit, times the site's sensitivity
        opts = {b: (bits_per_weight(b, 256, 64, False), 0.0 if b == 16 else s * 4.0 ** -b) for b in (2, 3, 4, 8, 16)}
        sites.append(SiteCost(f"s{i}", 256 * 256, opts))
    for target in (2.5, 3.25, 4.25, 6.0):
        choice = allocate(sites, target)
        assert average_bits(sites, choice) <= target
        order = sorted(range(12), key=lambda i: sens[i])
        bits = [choice[f"s{i}"] for i in order]
        assert bits == sorted(bits), (target, bits)  # more sensitive -> at least as many bits
        assert len(set(bits)) > 1 or target >= 6  # the budget is used, not everyone at the bottom
    with pytest.raises(ValueError, match="narrowest candidate widths average"):
        allocate(sites, 2.0)


def test_recipe_options_are_checked():
    with pytest.raises(RecipeError, match="exactly one of target_bits, max_ppl_increase"):
        resolve({"weights": {"bits": 4}, "passes": [{"name": "mixed_precision", "target_bits": 4.0,
                                                      "max_ppl_increase": 0.1}]})
    with pytest.raises(RecipeError, match="weight-only"):
        resolve({"weights": {"bits": 4}, "activations": {"bits": 8},
                 "passes": [{"name": "mixed_precision", "target_bits": 4.0}]})
    with pytest.raises(RecipeError, match="candidates"):
        resolve({"weights": {"bits": 4}, "passes": [{"name": "mixed_precision", "target_bits": 4.0,
                                                      "candidates": [5]}]})


def test_mixed_model_lowers_and_matches_fake_quant():
    model = tiny_model("llama")
    q = qpass.compile(model, _recipe(target_bits=4.6), _calib(), progress=False, lower=False)
    plan = q.qpass_state.plan
    rep = qpass.report(q)
    alloc = plan.allocation
    total = sum(a.weights for a in alloc.values())
    in_features = {r.name: int(r.shape.split(" -> ")[0]) for r in rep.rows}
    avg = sum(a.weights * bits_per_weight(a.bits, in_features[n], 32, symmetric=a.bits == 8)
              for n, a in alloc.items()) / total
    assert avg <= 4.6
    widths = {a.bits for a in alloc.values()}
    assert len(widths) >= 2, widths
    for name, a in alloc.items():  # the plan rounds each site at its width; 16 stays FP with the reason
        if a.bits == 16:
            assert "mixed precision: 16 bits" in plan.skipped[name]
        else:
            assert plan[name].weight.bits == a.bits
    assert all(r.bits is not None and r.sensitivity for r in rep.rows if r.name in alloc)
    assert any("mixed precision (target 4.6 bits)" in line for line in plan.log)
    # lowered twin over the same plan: 2/3/4-bit -> w4a16 kernel, 8-bit -> w8a16, vs the fake-quant graph
    transform = quantize_transform(plan, lower=True)
    lowered, _ = compile_forward(q, transform)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = q(ids).logits, lowered(input_ids=ids).logits
    assert float((out - ref).norm() / ref.norm()) < 1e-3
    expect = {2: "w4a16", 3: "w4a16", 4: "w4a16", 8: "w8a16"}
    for name, a in alloc.items():
        if a.bits != 16:
            assert transform.outcomes[name] == expect[a.bits], (name, a.bits, transform.outcomes[name])


def test_max_ppl_increase_keeps_calibration_perplexity_within_the_bound():
    model = tiny_model("llama")
    with torch.no_grad():  # sharpen the random model so rounding moves its loss (a fresh init hardly reacts)
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    q = qpass.compile(model, _recipe(max_ppl_increase=0.02), _calib(), progress=False, lower=False)
    plan = q.qpass_state.plan
    line = next(x for x in plan.log if x.startswith("mixed precision (calibration perplexity"))
    m = re.search(r"perplexity ([\d.]+) -> ([\d.]+) .* bound ([\d.]+)", line)
    base, got, bound = map(float, m.groups())
    assert got <= bound and bound == pytest.approx(base * 1.02, rel=1e-3)
    widths = {a.bits for a in plan.allocation.values()}
    assert widths != {2}, line  # the bound forced wider sites than the cheapest everywhere


def test_loss_sensitivity_ranks_by_calibration_loss_and_meets_the_budget():
    model = tiny_model("llama")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    base = Recipe("g32", weights=WeightSpec(bits=4, group_size=32, symmetric=False))
    d = base.to_dict()
    d["passes"] = [{"name": "mixed_precision", "target_bits": 3.5, "sensitivity": "loss", "candidates": [2, 4, 8]}]
    q = qpass.compile(model, resolve(d), _calib(), progress=False, lower=False)
    alloc = q.qpass_state.plan.allocation
    assert all(v >= 0 for a in alloc.values() for v in a.sensitivity.values())
    # per site the measured loss is noisy; over the model, 8-bit rounding costs less loss than 2-bit
    assert sum(a.sensitivity[8] for a in alloc.values()) < sum(a.sensitivity[2] for a in alloc.values())
    assert any(a.sensitivity[2] > 0 for a in alloc.values())
    assert {a.bits for a in alloc.values()} <= {2, 4, 8} and len({a.bits for a in alloc.values()}) > 1


def test_fisher_sensitivity_is_the_gradient_weighted_output_error():
    """Per site and width: Σ_n E[g_n²] · E[Δy_n²], g the NLL's gradient at the site's output channel n and Δy the
    rounding's output error, both measured here directly (retain_grad on each output, inputs' second moment)."""
    from qpass.numerics import quantize_weight

    model = tiny_model("llama")
    calib = _calib()
    d = Recipe("g32", weights=WeightSpec(bits=4, group_size=32, symmetric=False)).to_dict()
    d["passes"] = [{"name": "mixed_precision", "target_bits": 3.5, "candidates": [2, 4, 8]}]  # fisher: the default
    q = qpass.compile(model, resolve(d), calib, progress=False, lower=False, copy=True)
    alloc = q.qpass_state.plan.allocation
    sites = {s.name: s for s in q.qpass_state.analysis.linears if s.name in alloc}
    outs, g2, xx = {}, {}, {}

    def hook(name):
        def keep(module, args, out):
            out.retain_grad()
            outs[name] = out
            x = args[0].detach().flatten(0, -2).double()
            xx[name] = xx.get(name, 0) + x.T @ x
        return keep

    handles = [model.get_submodule(s.weight.rpartition(".")[0]).register_forward_hook(hook(n)) for n, s in sites.items()]
    tokens = rows = 0
    for ids in calib:
        x = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=x).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").backward()
        tokens, rows = tokens + ids[:, 1:].numel(), rows + ids.numel()
        for n, o in outs.items():
            g2[n] = g2.get(n, 0) + o.grad.detach().flatten(0, -2).double().pow(2).sum(0)
    for h in handles:
        h.remove()
    for n, s in sites.items():
        w = model.get_parameter(s.weight).detach().float()
        for b in (2, 4, 8):
            delta = (quantize_weight(w, b, 32, b == 8).dequantize() - w).double()  # 8-bit is symmetric
            want = float(((delta @ (xx[n] / rows)) * delta).sum(1) @ (g2[n] / tokens))
            assert alloc[n].sensitivity[b] == pytest.approx(want, rel=2e-3), (n, b)
    assert {a.bits for a in alloc.values()} <= {2, 4, 8} and len({a.bits for a in alloc.values()}) > 1
