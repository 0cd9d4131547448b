"""lowering/graph_constants.py: a node computed by pure calls from literals is evaluated at lowering time; one
that reads a graph input, module state, a random draw or a tensor written in place is not. The attention rule
uses it to hand a compiled prompt's constant causal mask over as `is_causal` (no mask read at run time)."""
import operator

import pytest
import torch
import torch.fx as fx

import qpass
from qpass.capture import compile_forward
from qpass.lowering.graph_constants import constant_value, mutates
from qpass.lowering.lower import quantize_transform

from tiny_models import tiny_model


def _causal(S):
    i = torch.arange(S)
    return (i[None, :] <= i[:, None])[None, None]


def _graph(body) -> fx.Graph:
    """A graph whose output is body(graph, x) (x a placeholder)."""
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(body(g, x))
    return g


def _out(g: fx.Graph) -> fx.Node:
    return next(n for n in g.nodes if n.op == "output").args[0]


def test_a_mask_from_aranges_is_evaluated():
    def body(g, x):
        i = g.call_function(torch.arange, (6,))
        rows = g.call_function(operator.getitem, (i, (slice(None), None)))
        cols = g.call_function(operator.getitem, (i, (None, slice(None))))
        le = g.call_function(operator.le, (cols, rows))
        both = g.call_function(operator.and_, (le, g.call_method("new_ones", (le, ()), {"dtype": torch.bool})))
        return g.call_method("expand", (g.call_function(operator.getitem, (both, (None, None))), 1, -1, 6, 6))
    value = constant_value(_out(_graph(body)))
    assert torch.equal(value, _causal(6))


@pytest.mark.parametrize("case", ["input", "module state", "random", "written in place"])
def test_what_is_not_a_constant(case):
    def body(g, x):
        i = g.call_function(torch.arange, (6,))
        if case == "input":
            i = g.call_function(operator.add, (i, x))
        elif case == "module state":
            i = g.call_function(operator.add, (i, g.get_attr("offset")))
        elif case == "random":
            i = g.call_function(operator.add, (i, g.call_function(torch.randint, (0, 2, (6,)))))
        else:
            g.call_method("add_", (i, 1))
        return g.call_function(operator.le, (g.call_function(operator.getitem, (i, (None, slice(None)))),
                                             g.call_function(operator.getitem, (i, (slice(None), None)))))
    assert constant_value(_out(_graph(body))) is None


def test_pure_operators_named_like_in_place_ones_do_not_mutate():
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    assert not mutates(g.call_function(operator.and_, (a, b))) and not mutates(g.call_function(operator.or_, (a, b)))
    assert mutates(g.call_function(operator.iand, (a, b))) and mutates(g.call_method("mul_", (a, 2)))


@pytest.mark.parametrize("padding_mask", [False, True])
def test_a_compiled_prompt_gets_is_causal_instead_of_its_constant_mask(padding_mask):
    """No cache and no attention mask, static shapes: HF builds the causal mask from aranges, and the dense
    attention op gets is_causal=True and no mask; with an attention mask passed in (a graph input) the op keeps the mask, which it
    checks at run time. Logits match the model's own either way."""
    model = tiny_model("llama")
    graphs = []
    transform = quantize_transform(qpass.plan.Plan({}), lower=True)
    # static shapes (the qpass backend's and qpass.compile(compiler=...)'s default): the mask is then constant
    forward, _ = compile_forward(model, lambda cap: (transform(cap), graphs.append(cap.gm)), dynamic=False)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    kw = {"attention_mask": torch.ones(1, 12, dtype=torch.long)} if padding_mask else {}
    with torch.no_grad():
        out, ref = (f(input_ids=ids, use_cache=False, **kw).logits for f in (forward, model))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    calls = [n for g in graphs for n in g.graph.nodes if n.target == torch.ops.qpass.attention.default]
    assert len(calls) == model.config.num_hidden_layers
    for n in calls:
        mask, is_causal = n.args[3], n.args[4]
        assert (mask is not None and not is_causal) if padding_mask else (mask is None and is_causal)


def test_sale_gets_no_mask_for_a_constant_causal_one():
    """The SALE rule too: a static-shape prompt's constant causal mask is checked at lowering time (the op's
    mask argument is None, its causal form); the logits match the model's own (a short prompt runs dense)."""
    from qpass.passes.sale import SaleOptions
    from qpass.plan import AttentionPlan, Plan

    model = tiny_model("llama")
    heads = model.config.num_attention_heads
    sale = AttentionPlan("sale", [0.05] * heads, SaleOptions(block_m=16, block_n=16, sink=16, window=16))
    plan = Plan({}, attention={f"model.layers.{i}.self_attn": sale for i in range(model.config.num_hidden_layers)})
    graphs = []
    transform = quantize_transform(plan, lower=True)
    forward, _ = compile_forward(model, lambda cap: (transform(cap), graphs.append(cap.gm)), dynamic=False)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = (f(input_ids=ids, use_cache=False).logits for f in (forward, model))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    calls = [n for g in graphs for n in g.graph.nodes if n.target == torch.ops.qpass.sale_attention.default]
    assert len(calls) == model.config.num_hidden_layers and all(n.args[12] is None for n in calls)


def test_a_call_that_fails_outside_its_graph_is_not_a_constant():
    def body(g, x):
        return g.call_function(torch.reshape, (g.call_function(torch.arange, (6,)), (4, 4)))
    assert constant_value(_out(_graph(body))) is None
