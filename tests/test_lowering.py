"""Lowering rules on tiny models: lowered graph vs the fake-quant graph, per scheme; unmatched sites reported."""
import inspect

import pytest
import torch

import qpass
from qpass import ActivationSpec, PassSpec, CalibrationSpec, Recipe, WeightSpec
from qpass.capture import compile_forward
from qpass.lowering.lower import quantize_transform
from qpass.lowering.rules import RULES

from tiny_models import tiny_model

KERNEL_OPS = {f"qpass.{k}.default" for k in ("w4a16_linear", "int8_linear", "w4a8_linear", "ternary_linear")}
FAKE_OPS = {f"qpass.{k}.default" for k in ("dequantize_weight", "dequantize_trit_planes")}


def _ids(n=2, t=24, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _lowered_twin(q):
    """A lowered forward over the same quantized copy and plan as `q` (compiled with lower=False),
    plus the graphs it compiled: the fake-quant reference and the lowered graph share everything else."""
    graphs = []
    transform = quantize_transform(q.qpass_state.plan, lower=True)

    def record(cap):
        transform(cap)
        graphs.append(cap.gm)

    forward, _ = compile_forward(q, record)
    return forward, transform.outcomes, graphs


def _sequence_diffs(out, ref):
    """Relative L2 difference of each sequence's logits [B, S, V]: a list of B floats."""
    return ((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).tolist()


def _assert_lowered_matches(lowered, fake, tol=1e-4, seeds=(0, 1, 2)):
    """The lowered graph computes what the fake-quant graph computes, up to the float rounding of its int GEMMs
    (~2e-7 relative). Those last bits move an activation lying on a rounding tie (x/Δ within a few ulps of k + ½)
    to the neighbouring code in one graph only, and its sequence then differs from that token on (seen: one code
    at x/Δ = 61.5 in the fake-quant graph, 61.49999 lowered: 1.2e-3 on that batch). So over 6 sequences: the
    median agrees to `tol`, none is off by more than 2e-2 (a wrong lowering is off everywhere)."""
    diffs = []
    with torch.no_grad():
        for seed in seeds:
            ids = _ids(seed=seed)
            diffs += _sequence_diffs(lowered(input_ids=ids).logits, fake(input_ids=ids).logits)
    assert max(diffs) < 2e-2 and sorted(diffs)[len(diffs) // 2] < tol, diffs


def _per_channel(bits_w, bits_a):
    return Recipe(f"w{bits_w}a{bits_a}-pc", weights=WeightSpec(bits=bits_w, group_size=None),
                  activations=ActivationSpec(bits=bits_a, granularity="per_token"))


@pytest.mark.parametrize("arch, recipe, rule", [
    ("llama", "w4a16", "w4a16"),
    ("gpt2", "w4a16", "w4a16"),
    ("llama", "w8a8", "w8a8"),
    ("llama", _per_channel(4, 8), "w4a8"),
    ("qwen2", "w4a4", "w4a8"),
    ("llama", Recipe("w4a8-asym", weights=WeightSpec(bits=4, group_size=32, symmetric=False),
                     activations=ActivationSpec(bits=8, granularity="per_token")), "w4a8"),
    ("gpt2", Recipe("w8a8-asym", weights=WeightSpec(bits=8, group_size=None, symmetric=False),
                    activations=ActivationSpec(bits=8, granularity="per_token")), "w8a8"),
    ("llama", Recipe("ternary-g32", weights=None, passes=[PassSpec("trit_planes", {"group_size": 32, "max_iter": 5})]), "ternary"),
])
def test_lowered_matches_fake_quant(arch, recipe, rule):
    q = qpass.compile(tiny_model(arch), recipe, progress=False, lower=False)
    lowered, outcomes, graphs = _lowered_twin(q)
    ids = _ids()
    with torch.no_grad():
        ref, out = q(ids).logits, lowered(input_ids=ids).logits
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-3, rel  # int GEMMs vs float dequant: rounding of the activation step only
    plan = q.qpass_state.plan
    assert {outcomes[site] for site in plan} == {rule}
    assert {v for k, v in outcomes.items() if k not in plan} == {"attention"}  # every SDPA: the dense rule
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    assert targets & KERNEL_OPS and not targets & FAKE_OPS  # every dequantize node is gone
    assert not [b for b in graphs[0]._buffers if b.startswith("qpass_") and "lowered" not in b]  # fake-quant buffers freed


def test_clipped_dynamic_activations_lower_and_are_not_ignored():
    """activations.clip_ratio on dynamic per-token steps (QuaRot's 0.9): the fake-quant graph and the int kernels
    clip alike, the report says so, and the result differs from the unclipped recipe."""
    clipped = Recipe("w4a4-clip", weights=WeightSpec(bits=4, group_size=None),
                     activations=ActivationSpec(bits=4, granularity="per_token", clip_ratio=0.8))
    q = qpass.compile(tiny_model("llama"), clipped, progress=False, lower=False)
    lowered, outcomes, _ = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)
    assert set(outcomes[site] for site in q.qpass_state.plan) == {"w4a8"}
    assert all("clip 0.8" in sp.describe() for sp in q.qpass_state.plan.values())
    plain = qpass.compile(tiny_model("llama"), _per_channel(4, 4), progress=False, lower=False)
    with torch.no_grad():
        assert not torch.allclose(q(_ids()).logits, plain(_ids()).logits)


def test_searched_token_clip_is_the_best_of_its_grid_per_input():
    """activations.clip_search: mse picks, per input, the grid clip with the smallest output error on calibration
    tokens, summed over the sites reading that input (q/k/v share one quantizer) — recomputed here for the first
    block, whose inputs are the model's own — and the lowered graph follows each input's own clip."""
    from qpass.numerics import fake_quant_per_token
    from qpass.passes.rounding import TOKEN_CLIP_GRID

    recipe = Recipe("w4a4-clip-search", weights=WeightSpec(bits=4, group_size=None),
                    activations=ActivationSpec(bits=4, granularity="per_token", clip_search="mse"))
    model = tiny_model("llama")
    calib = [_ids(seed=5)]
    q = qpass.compile(model, recipe, calib, progress=False, lower=False, copy=True)
    state = q.qpass_state
    sites = {s.name: s for s in state.analysis.linears if s.name in state.plan}
    samples = {}
    hooks = [model.get_submodule(s.weight.rpartition(".")[0]).register_forward_hook(
        lambda m, a, o, n=n: samples.__setitem__(n, a[0].detach().flatten(0, -2))) for n, s in sites.items()]
    with torch.no_grad():
        model(calib[0])
    for h in hooks:
        h.remove()
    first = {n for n in sites if ".layers.0." in n}  # later blocks calibrate on quantized blocks' outputs
    groups = {tuple(sorted({n, *sites[n].siblings} & first)) for n in first}
    assert any(len(g) > 1 for g in groups)  # q/k/v, gate/up
    for group in groups:
        err = dict.fromkeys(TOKEN_CLIP_GRID, 0.0)
        for n in group:
            x, sp = samples[n], state.plan[n]
            y = x @ model.get_parameter(sp.weight_fqn).detach().float().T
            for r in err:
                err[r] += float((y - fake_quant_per_token(x, 4, True, r) @ sp.weight.dequantize().T).pow(2).sum()
                                / y.pow(2).sum())
        picked = {state.plan[n].activation.clip_ratio for n in group}
        assert len(picked) == 1 and err[picked.pop()] <= min(err.values()) * (1 + 1e-5), group
    assert {sp.activation.clip_ratio for sp in state.plan.values()} != {1.0}  # 4-bit tokens: clipping wins somewhere
    lowered, _, _ = _lowered_twin(q)
    _assert_lowered_matches(lowered, q)


def test_compile_lowers_by_default_and_reports_unmatched_sites():
    model = tiny_model("llama")
    # g80 weights: the int GEMMs take groups that are multiples of 32 (or the whole row), so the K = 64 sites (one
    # group) lower and down_proj (K = 96: groups of 80 and 16) does not
    w4a8_g80 = Recipe("w4a8-g80", weights=WeightSpec(bits=4, group_size=80),
                      activations=ActivationSpec(bits=8, granularity="per_token"))
    q = qpass.compile(model, w4a8_g80, progress=False, copy=True)
    rep = qpass.report(q)
    s = rep.summary()
    down = [r for r in rep.quantized if r.name.endswith("down_proj")]
    assert down and all(r.lowering.startswith("unmatched") and "group size 80 at K=96" in r.lowering
                        and "a multiple of 32" in r.lowering for r in down)
    assert s["lowered"] == s["quantized"] - len(down) and sorted(s["not_lowered"]) == sorted(r.name for r in down)
    assert "NOT LOWERED model.layers.0.mlp.down_proj" in rep.format()
    # a weight-only 8-bit recipe lowers to its own kernel; a group the Triton kernels do not support is refused
    q8 = qpass.compile(model, "w8a16", progress=False, copy=True)
    assert all(r.lowering == "w8a16" for r in qpass.report(q8).quantized)
    q48 = qpass.compile(model, Recipe("w4a16-g48", weights=WeightSpec(bits=4, group_size=48)), progress=False, copy=True)
    assert all("group size 48" in r.lowering for r in qpass.report(q48).quantized)
    ids = _ids()
    with torch.no_grad():  # unmatched sites still run (their fake-quant nodes stay)
        assert torch.isfinite(q(ids).logits).all() and torch.isfinite(q48(ids).logits).all()
    assert q.generate(ids[:1, :4], max_new_tokens=3, do_sample=False).shape == (1, 7)


def test_static_qsm_sites_lower_to_the_int_gemm_with_the_gather():
    """QSM with per-row int4 weights: static one-step activations, channel sort/split/pad gather."""
    calib = [torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    recipe = Recipe("w4a8-qsm-pc", weights=WeightSpec(bits=4, group_size=None),
                    activations=ActivationSpec(bits=8, granularity="per_channel"),
                    passes=[PassSpec("qsm", {"split": 2.0, "clip_search": False})],
                    calibration=CalibrationSpec(num_samples=4, skip_tokens=1))
    q = qpass.compile(tiny_model("llama"), recipe, calib, progress=False, lower=False)
    assert any(sp.gather is not None for sp in q.qpass_state.plan.values())
    lowered, outcomes, _ = _lowered_twin(q)
    ids = _ids()
    with torch.no_grad():
        ref, out = q(ids).logits, lowered(input_ids=ids).logits
    assert {outcomes[site] for site in q.qpass_state.plan} == {"w4a8-static"}
    assert float((out - ref).norm() / ref.norm()) < 1e-3


def test_rule_table_is_one_table_with_unique_names():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)) and {"w4a16", "w8a8", "w4a8", "ternary", "sale"} <= set(names)
    assert all(r.kernel.startswith("qpass::") for r in RULES)


def test_sdpa_rule_lowers_planned_attention_and_reports_the_rest():
    """The attention rules of the same table: SDPA of a module with a SALE plan → qpass::sale_attention; a plan
    that does not fit (τ count ≠ heads) is reported; both it and a module without a plan run dense attention."""
    from qpass.passes.sale import SaleOptions
    from qpass.plan import AttentionPlan, Plan

    model = tiny_model("llama")
    o = SaleOptions(block_m=16, block_n=16, sink=16, window=16, min_seq_len=0)
    plan = Plan(attention={"model.layers.0.self_attn": AttentionPlan("sale", [0.05] * 4, o),
                               "model.layers.1.self_attn": AttentionPlan("sale", [0.05] * 3, o)})
    graphs = []
    transform = quantize_transform(plan, lower=True)
    forward, _ = compile_forward(model, lambda cap: (transform(cap), graphs.append(cap.gm)))
    ids = _ids(1, 100)
    with torch.no_grad():
        out, dense = forward(input_ids=ids).logits, model(input_ids=ids).logits
    assert transform.outcomes == {"model.layers.0.self_attn": "sale",
                                  "model.layers.1.self_attn": "unmatched: 3 τ for 4 query heads"}
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert targets.count("qpass.sale_attention.default") == 1 and targets.count("qpass.attention.default") == 1
    assert torch.isfinite(out).all() and not torch.allclose(out, dense, atol=1e-4)
    only0 = Plan(attention={"model.layers.0.self_attn": AttentionPlan("sale", [0.05] * 4, o)})
    t2 = quantize_transform(only0, lower=True)
    forward, _ = compile_forward(tiny_model("llama"), t2)
    with torch.no_grad():
        forward(input_ids=_ids(1, 20))
    assert t2.outcomes["model.layers.1.self_attn"] == "attention"


@pytest.mark.parametrize("rule", ["attention", "sale"])
def test_attention_rules_read_grouped_kv_without_repeat_kv(rule):
    """A StaticCache prefill and decode steps: HF passes a mask there, so it repeats K/V to the query heads
    (repeat_kv); both attention rules hand their op the cache's own K/V heads instead, with the same outputs
    (SALE: prefills this short and decode steps run dense)."""
    import transformers as tf

    from qpass.capture import node_value
    from qpass.passes.sale import SaleOptions
    from qpass.plan import AttentionPlan, Plan

    model = tiny_model("llama")
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    assert kv_heads < heads
    sale = AttentionPlan("sale", [0.05] * heads, SaleOptions(block_m=16, block_n=16, sink=16, window=16))
    attention = {f"model.layers.{i}.self_attn": sale for i in range(2)} if rule == "sale" else {}
    op = {"attention": torch.ops.qpass.attention.default, "sale": torch.ops.qpass.sale_attention.default}[rule]
    graphs, repeats = [], []

    def five_d_expands(gm):  # repeat_kv's x[:, :, None].expand(B, Hkv, n, L, D)
        return [n for n in gm.graph.nodes if n.target == "expand" and node_value(n).dim() == 5]

    transform = quantize_transform(Plan({}, attention=attention), lower=True)
    forward, _ = compile_forward(model, lambda cap: (repeats.extend(five_d_expands(cap.gm)), transform(cap),
                                                     graphs.append(cap.gm)))
    # transformers renamed the forward's cache argument (5.17: past_key_values; later: cache)
    cache_kw = "cache" if "cache" in inspect.signature(tf.LlamaForCausalLM.forward).parameters else "past_key_values"
    ids = _ids(1, 12)
    outs = []
    with torch.no_grad():
        for f in (forward, model):
            cache = tf.StaticCache(config=model.config, max_cache_len=32)
            logits = [f(input_ids=ids, use_cache=True, **{cache_kw: cache}).logits[:, -1]]
            for _ in range(3):
                nxt = logits[-1].argmax(-1, keepdim=True)
                logits.append(f(input_ids=nxt, use_cache=True, **{cache_kw: cache}).logits[:, -1])
            outs.append(torch.stack(logits))
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-4), (outs[0] - outs[1]).abs().max()
    assert set(transform.outcomes.values()) == {rule}
    calls = [n for g in graphs for n in g.graph.nodes if n.target == op]
    assert len(calls) == 2 * model.config.num_hidden_layers  # prefill and decode graphs
    masks = [n.args[3] if rule == "attention" else n.args[-1] for n in calls]
    assert any(m is not None for m in masks)  # decode: masked, where HF repeats K/V
    assert rule == "sale" or all(n.args[6] is True for n in calls)  # enable_gqa
    for n in calls:
        q, k, v = n.args[:3]
        assert node_value(q).shape[1] == heads and node_value(k).shape[1] == node_value(v).shape[1] == kv_heads
    assert repeats and not [n for g in graphs for n in five_d_expands(g)]  # repeat_kv was there, and is gone


@pytest.mark.parametrize("decompose", [False, True])
def test_unrepeat_kv_reads_export_graphs(decompose):
    """torch.export spells repeat_kv unsqueeze → expand → reshape (decomposed: → clone → view); other group
    sizes or shapes are left alone."""
    import torch.nn.functional as F

    from qpass.lowering.pattern import unrepeat_kv

    class Repeat(torch.nn.Module):
        def forward(self, q, k, v, m):
            b, h, s, d = k.shape
            rk = k[:, :, None, :, :].expand(b, h, 3, s, d).reshape(b, h * 3, s, d)
            rv = v[:, :, None, :, :].expand(b, h, 3, s, d).reshape(b, h * 3, s, d)
            return F.scaled_dot_product_attention(q, rk, rv, attn_mask=m) + rv.sum()

    args = (torch.randn(1, 6, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8),
            torch.ones(1, 1, 1, 5, dtype=torch.bool))
    ep = torch.export.export(Repeat(), args)
    gm = (ep.run_decompositions() if decompose else ep).graph_module
    k, v = (n for n in gm.graph.nodes if n.op == "placeholder" and n.name in ("k", "v"))
    repeated = [n for n in gm.graph.nodes if n.target in (torch.ops.aten.reshape.default, torch.ops.aten.view.default)
                and tuple(n.meta["val"].shape) == (1, 6, 5, 8)]  # the repeated K and V
    assert [unrepeat_kv(n, 6) for n in repeated] == [k, v]
    assert [unrepeat_kv(n, 12) for n in repeated] == [None, None]  # not the query heads


@pytest.mark.parametrize("arch, recipe", [
    ("llama", "w4a16"), ("qwen2", "w4a16"), ("qwen2", "w8a8"), ("llama", _per_channel(4, 8)),
    ("llama", Recipe("ternary-g32", weights=None, passes=[PassSpec("trit_planes", {"group_size": 32, "max_iter": 2})])),
])
def test_sibling_linears_share_one_kernel_call(arch, recipe):
    """q/k/v and gate/up read one input: one call on row-stacked weights (Qwen2: biases concatenated), a view
    per member; outputs equal the unfused lowering's, every site is still reported by its rule."""
    q = qpass.compile(tiny_model(arch), recipe, progress=False, lower=False)
    ids = _ids()
    calls, outs = {}, {}
    for fuse in (True, False):
        graphs = []
        transform = quantize_transform(q.qpass_state.plan, lower=True, fuse=fuse)
        forward, _ = compile_forward(q, lambda cap: (transform(cap), graphs.append(cap.gm)))
        with torch.no_grad():
            outs[fuse] = forward(input_ids=ids).logits
        calls[fuse] = sum(str(n.target) in KERNEL_OPS for n in graphs[0].graph.nodes)
        quant = sum("quantize_activation" in str(n.target) for n in graphs[0].graph.nodes)
        assert {transform.outcomes[s] for s in q.qpass_state.plan} != set() and \
            not any(v.startswith("unmatched") for v in transform.outcomes.values())
        assert quant in (0, calls[fuse])  # int rules: one activation quantization per call, shared by siblings
        assert len(transform.fused) == (2 * q.config.num_hidden_layers if fuse else 0)  # qkv and gate+up per layer
    layers = q.config.num_hidden_layers
    assert calls[False] == 7 * layers and calls[True] == 4 * layers  # qkv, o, gate+up, down
    assert torch.equal(outs[True], outs[False])


def test_fractional_weight_zero_points_stay_on_the_fake_quant_path_with_the_reason():
    """The int GEMMs subtract weight zero points in int32: a plan whose zeros are not integer codes (e.g. an
    imported checkpoint's) is refused by the w4a8 rule with that reason, not rounded silently."""
    r = Recipe("w4a8-asym", weights=WeightSpec(bits=4, group_size=32, symmetric=False),
               activations=ActivationSpec(bits=8, granularity="per_token"))
    q = qpass.compile(tiny_model("llama"), r, progress=False, lower=False)
    for sp in q.qpass_state.plan.values():
        sp.weight.zero = sp.weight.zero + 0.5
    lowered, outcomes, _ = _lowered_twin(q)
    with torch.no_grad():
        lowered(input_ids=_ids())
    reasons = {outcomes[s] for s in q.qpass_state.plan}
    assert all(o.startswith("unmatched") and "weight zero points are not integers in [0, 15]" in o
               for o in reasons), reasons
