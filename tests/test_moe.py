"""Mixture-of-experts models (tiny Mixtral and Qwen3-MoE, transformers' 3-D expert tensors): expert sites found
in the graph, quantized per expert, lowered to qpass::moe_w4a16, routers kept in full precision, calibration
coverage per expert, save -> reload in a fresh process."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import qpass
from qpass.api import capture_analysis
from qpass.calibrate import calibrate
from qpass.expert_tokens import MIN_EXPERT_TOKENS, token_report
from qpass.export import export_program

from tiny_models import tiny_model

FAMILIES = ["mixtral", "qwen3_moe"]
IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))


def _logits(m, ids=IDS):
    with torch.no_grad():
        return m(input_ids=ids, use_cache=False).logits


def _expert_params(model):
    return {n: p for n, p in model.named_parameters() if p.dim() == 3}


@pytest.mark.parametrize("family", FAMILIES)
def test_analysis_finds_expert_sites_and_routers(family):
    model = tiny_model(family)
    captured = capture_analysis(model, IDS[:1, :8])
    analysis, graphs = captured.analysis, captured.graph_count
    params = _expert_params(model)
    sites = {s.name: s for s in analysis.experts}
    assert graphs == 1 and set(sites) == set(params)  # every 3-D tensor, nothing else
    for name, s in sites.items():
        E, out_f, in_f = params[name].shape  # transformers stores [E, out, in] and reads it transposed
        assert (s.num_experts, s.out_features, s.in_features, s.transposed) == (E, out_f, in_f, False)
    assert not analysis.unsupported
    routers = sorted(s.name for s in analysis.linears if s.routes)
    assert routers == [f"model.layers.{i}.mlp.gate" for i in range(model.config.num_hidden_layers)]


@pytest.fixture(scope="module", params=FAMILIES)
def w4a16(request):
    model = tiny_model(request.param)
    return (model, qpass.compile(model, "w4a16", progress=False, copy=True),
            qpass.compile(model, "w4a16", progress=False, lower=False, copy=True))


def test_experts_quantized_lowered_and_close(w4a16):
    model, q, fake = w4a16
    state, report = q.qpass_state, qpass.report(q)
    params = _expert_params(model)
    assert set(state.plan.experts) == set(params) and len(params) == 4
    for name, sp in state.plan.experts.items():
        E, out_f, in_f = params[name].shape
        assert sp.weight.bits == 4 and sp.weight.qweight.shape == (E * out_f, in_f)  # one row per expert row
        assert sp.weight.scale.shape == (E * out_f, -(-in_f // 64))  # groups along the input dim
        assert 0 < sp.weight_error < 0.2
        assert state.lowering[name] == "moe_w4a16"
    rows = {r.name: r for r in report.rows}
    assert all(rows[n].status == "quantized" and rows[n].lowering == "moe_w4a16" for n in params)
    ref, lowered, fq = _logits(model), _logits(q), _logits(fake)
    assert float((lowered - fq).abs().max()) <= 1e-4
    assert float((fq - ref).abs().max()) > 1e-3  # the experts (and linears) really were quantized
    assert all(q.get_parameter(n).isnan().all() for n in params)  # float expert tensors released (float_weights.py)
    program = export_program(q)
    targets = [n.target for n in program.graph_module.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.qpass.moe_w4a16.default) == 4
    assert not any("grouped_mm" in str(t) for t in targets)


def test_router_left_in_full_precision_with_reason(w4a16):
    _, q, _ = w4a16
    rows = {r.name: r for r in qpass.report(q).rows}
    for name in ("model.layers.0.mlp.gate", "model.layers.1.mlp.gate"):
        assert rows[name].status == "full precision"
        assert rows[name].reason.startswith("router: its output selects experts (top-k)")


def test_experts_only_quantized_changes_expert_output():
    """Ignoring every linear isolates the experts: the model's output moves only through them."""
    model = tiny_model("mixtral")
    q = qpass.compile(model, {"weights": {"bits": 4, "group_size": 32}, "ignore": ["re:self_attn", "lm_head"]},
                      progress=False, copy=True)
    assert not q.qpass_state.plan.sites and len(q.qpass_state.plan.experts) == 4
    assert float((_logits(q) - _logits(model)).abs().max()) > 1e-3


@pytest.mark.parametrize("preset,bits,lowered", [("w3a16", 3, True), ("w8a16", 8, False)])
def test_other_weight_only_presets(preset, bits, lowered):
    q = qpass.compile(tiny_model("qwen3_moe"), preset, progress=False)
    state = q.qpass_state
    assert len(state.plan.experts) == 4 and all(sp.weight.bits == bits for sp in state.plan.experts.values())
    for name in state.plan.experts:
        if lowered:
            assert state.lowering[name] == "moe_w4a16"
        else:  # no 8-bit expert kernel: the fake-quant graph runs, and the report says why
            assert state.lowering[name].startswith("unmatched: no expert kernel takes 8-bit weights")


@pytest.mark.parametrize("preset,reason", [("w8a8", "experts take no quantized inputs"),
                                           ("ternary", "pass 'trit_planes' does not handle expert weights")])
def test_unsupported_presets_keep_experts_fp_with_reason(preset, reason):
    q = qpass.compile(tiny_model("mixtral"), preset, progress=False)
    rows = [r for r in qpass.report(q).rows if r.producer == "experts"]
    assert len(rows) == 4 and not q.qpass_state.plan.experts
    assert all(r.status == "full precision" and r.reason.startswith(reason) for r in rows)


def _reload_in_fresh_process(d, ids, tmp_path):
    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    code = (
        "import sys, torch, qpass; from safetensors.torch import load_file, save_file\n"
        "m = qpass.load(sys.argv[1]); ids = load_file(sys.argv[2])['ids']\n"
        "ops = [str(n.target) for n in m.module.graph.nodes if n.op == 'call_function']\n"
        "print(ops.count('qpass.moe_w4a16.default'), ops.count('qpass.moe_linear.default'))\n"
        "with torch.no_grad(): save_file({'out': m(ids)}, sys.argv[3])\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", code, str(d), str(tmp_path / "ids.safetensors"),
                          str(tmp_path / "out.safetensors")], check=True, env=env, timeout=600, capture_output=True,
                         text=True)
    counts = tuple(int(v) for v in run.stdout.split()[-2:])
    return load_file(str(tmp_path / "out.safetensors"))["out"], counts


@pytest.mark.parametrize("family,preset,ops", [("mixtral", "w4a16", (4, 0)), ("qwen3_moe", "w8a8", (0, 4))])
def test_save_reload_same_logits(family, preset, ops, tmp_path):
    q = qpass.compile(tiny_model(family), preset, progress=False)
    qpass.save(q, tmp_path / "saved")
    out, counts = _reload_in_fresh_process(tmp_path / "saved", IDS, tmp_path)
    assert counts == ops  # int4 experts, or full-precision experts through qpass::moe_linear
    assert float((out - _logits(q)).abs().max()) <= 1e-5


def test_calibration_counts_tokens_per_expert():
    model = tiny_model("qwen3_moe")
    batches = [torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(3))]
    tokens: dict = {}
    calibrate(model, batches, set(), progress=False, expert_tokens=tokens)
    assert sorted(tokens) == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    k = model.config.num_experts_per_tok
    for counter in tokens.values():
        assert int(counter.counts.sum()) == 2 * 8 * k  # every token routed to k experts, each pair counted once
    lines = token_report(tokens, min_tokens=10_000)
    assert len(lines) == 2 and all(line.startswith("LOW CALIBRATION") and "4 of 4 experts" in line for line in lines)
    assert token_report(tokens, min_tokens=0) == [f"expert calibration: every expert saw at least 0 routed tokens"]


def test_low_token_experts_in_the_report():
    """A calibrating preset on 4 tokens: far fewer routed tokens than MIN_EXPERT_TOKENS for every expert."""
    calib = [torch.randint(0, 256, (1, 4), generator=torch.Generator().manual_seed(4))]
    q = qpass.compile(tiny_model("mixtral"), "w8a8-static", calib=calib, progress=False)
    text = qpass.report(q).format()
    low = [line for line in text.splitlines() if "LOW CALIBRATION" in line]
    assert len(low) == 2 and all(f"fewer than {MIN_EXPERT_TOKENS} routed tokens" in line for line in low)
