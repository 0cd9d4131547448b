"""Graph analysis on every tiny architecture: linear sites, FQNs, producers, siblings, attention — 0 graph breaks."""
import pytest
import torch

from qpass.analysis import analyze
from qpass.api import capture_analysis
from qpass.capture import compile_forward

from tiny_models import CONFIGS, tiny_model

# The families whose sites these tests spell out by name; phi3 (fused qkv / gate_up), opt and the MoE families
# are covered by the coverage matrix (tests/test_coverage.py).
ARCHS = sorted(set(CONFIGS) - {"phi3", "opt", "mixtral", "qwen3_moe"})


@pytest.fixture(scope="module")
def analyses():
    out = {}
    for arch in ARCHS:
        model = tiny_model(arch)
        captured = capture_analysis(model, torch.randint(0, 256, (1, 10)))
        out[arch] = (model, captured.analysis, captured.graph_count)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_one_graph_every_linear_found_with_its_parameter(analyses, arch):
    model, a, graphs = analyses[arch]
    assert graphs == 1  # no graph breaks
    params = dict(model.named_parameters())
    n_layers = model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else model.config.n_layer
    per_layer = 4 if arch == "gpt2" else 7
    assert len(a.linears) == n_layers * per_layer + 1  # + lm_head
    for s in a.linears:
        w = params[s.weight]
        assert w.shape == ((s.in_features, s.out_features) if s.transposed else (s.out_features, s.in_features))
    assert a.linears[-1].name == "lm_head"
    assert not a.unsupported


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "gpt2"])
def test_llama_family_producers_and_siblings(analyses, arch):
    _, a, _ = analyses[arch]
    sites = a.by_name()
    q, k, v = (sites[f"model.layers.0.self_attn.{p}_proj"] for p in "qkv")
    for s in (q, k, v):
        assert s.producer.kind == "norm"
        assert s.producer.norm_weight == "model.layers.0.input_layernorm.weight"
        assert s.producer.norm_form == ("one_plus_gamma" if arch.startswith("gemma") else "gamma")
    assert sorted(q.siblings) == ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]
    assert sites["model.layers.0.self_attn.o_proj"].producer.kind == "attention"
    gate = sites["model.layers.1.mlp.gate_proj"]
    assert gate.producer.kind == "norm" and gate.siblings == ["model.layers.1.mlp.up_proj"]
    down = sites["model.layers.1.mlp.down_proj"]
    assert down.producer.kind == "elementwise" and down.producer.op == "mul" and not down.siblings
    assert sites["lm_head"].producer.kind == "norm"


def test_gpt2_conv1d_sites_are_transposed_addmm(analyses):
    _, a, _ = analyses["gpt2"]
    sites = a.by_name()
    c_attn = sites["transformer.h.0.attn.c_attn"]
    assert c_attn.op == "addmm" and c_attn.transposed and c_attn.bias == "transformer.h.0.attn.c_attn.bias"
    assert (c_attn.in_features, c_attn.out_features) == (64, 192)
    assert c_attn.producer.kind == "norm" and c_attn.producer.op == "layer_norm"
    assert c_attn.producer.norm_weight == "transformer.h.0.ln_1.weight"
    assert sites["transformer.h.0.attn.c_proj"].producer.kind == "attention"
    assert sites["lm_head"].weight == "transformer.wte.weight"  # tied: the first name of the shared tensor


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_sites_and_their_sources(analyses, arch):
    _, a, _ = analyses[arch]
    n_layers = 2
    assert len(a.attention) == n_layers
    att = a.attention[0]
    if arch == "gpt2":
        assert att.sources == {k: ["transformer.h.0.attn.c_attn"] for k in "qkv"}
    else:
        assert att.sources == {k: [f"model.layers.0.self_attn.{k}_proj"] for k in "qkv"}
    assert att.num_heads == 4 and att.head_dim == 16
    assert att.is_causal or att.has_mask


def test_unsupported_use_of_a_weight_is_reported():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)
            self.table = torch.nn.Parameter(torch.randn(8, 8))

        def forward(self, input_ids, use_cache=False):
            x = self.lin(torch.nn.functional.one_hot(input_ids, 8).float())
            return torch.bmm(x, self.table.expand(x.shape[0], 8, 8))

    model = Odd()
    captured = []
    fwd, _ = compile_forward(model, lambda cap: captured.append(analyze(cap)))
    fwd(input_ids=torch.randint(0, 8, (2, 3)))
    a = captured[0]
    assert [s.name for s in a.linears] == ["lin"]
    assert len(a.unsupported) == 1 and a.unsupported[0].tensor == "table" and "expand" in a.unsupported[0].op


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_export_capture_gives_the_same_analysis(analyses, arch):
    from qpass.capture import export_graph

    model, dynamo, _ = analyses[arch]
    _, cap = export_graph(model, torch.randint(0, 256, (1, 10)))
    exported = analyze(cap)
    assert [(s.name, s.weight, s.op, s.producer.kind, s.producer.norm_weight, sorted(s.siblings)) for s in exported.linears] == [
        (s.name, s.weight, s.op, s.producer.kind, s.producer.norm_weight, sorted(s.siblings)) for s in dynamo.linears
    ]
    assert [a.sources for a in exported.attention] == [a.sources for a in dynamo.attention]
