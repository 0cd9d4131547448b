"""SALE on every family with attention (tests/tiny_models.py): with τ = 0 (no block skipped) the lowered model
equals the model's own, including sliding-window configs whose window is shorter than the test sequence (their
local layers run SALE inside the window: the plan carries it, the op gets it); layers SALE cannot run
(soft-capping) are refused at plan time with the reason, never skipped silently."""
from __future__ import annotations

import pytest
import torch

import qpass
from qpass.passes.sale import SaleOptions, use_sale
from qpass.recipe import PassSpec, Recipe
from tiny_models import CONFIGS

FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gpt2", "phi3", "opt"]
# small blocks and min_seq_len=0: the sparse path runs (several blocks, a tail block) on a short sequence
OPTS = dict(block_m=16, block_n=16, sink=16, window=16, min_seq_len=0)
SEQ = 72  # 4 full blocks and a tail of 8
WINDOW = 40  # < SEQ (the window changes the model's attention), not a multiple of the 16-key blocks


def _model(family: str, window: bool) -> torch.nn.Module:
    import transformers as tf

    cfg = CONFIGS[family]()
    if window:
        cfg.sliding_window = WINDOW
        if hasattr(cfg, "use_sliding_window"):
            cfg.use_sliding_window = True
        if getattr(cfg, "layer_types", None) is not None:  # one local layer, one full layer
            cfg.layer_types = ["sliding_attention", "full_attention"]
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


def _zero_taus(model) -> dict[str, list[float]]:
    """τ = 0 for every attention module (names and heads as the model's own attention calls show them)."""
    ids = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad(), use_sale(model, "probe", SaleOptions(**OPTS)) as ctx:
        model(input_ids=ids, use_cache=False)
    return {n: [0.0] * c["heads"] for n, c in ctx.calls.items()}


def _compile_zero_tau(model) -> torch.nn.Module:
    recipe = Recipe("sale-tau0", weights=None, passes=[PassSpec("sale", {**OPTS, "taus": _zero_taus(model)})])
    return qpass.compile(model, recipe, progress=False, copy=True)


@pytest.mark.parametrize("window", [False, True], ids=["full", "window"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tau0_lowered_attention_equals_the_models_own(family, window):
    if window and not hasattr(CONFIGS[family](), "sliding_window"):
        pytest.skip(f"{family} has no sliding window")
    model = _model(family, window)
    ids = torch.randint(1, model.config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
    qm = _compile_zero_tau(model)
    with torch.no_grad():
        got = qm(input_ids=ids, use_cache=False).logits
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-4, f"{family}: lowered vs the model's own logits, relative L2 {rel:.2e}"

    outcome = qpass.report(qm).attention_lowering
    plan = qm.qpass_state.plan.attention
    assert set(outcome) == set(plan) and plan, outcome
    for name, ap in plan.items():  # every planned module: lowered to SALE, or refused with its reason
        if ap.refused:
            assert outcome[name] == "unmatched: " + ap.refused
        else:
            assert outcome[name] == "sale", (name, outcome[name])
    refused = {n: ap.refused for n, ap in plan.items() if ap.refused}
    if family == "gemma2":  # soft-capped logits: eager attention, no SDPA node; refused by name
        assert all("soft-capping" in why for why in refused.values()) and len(refused) == len(plan)
        return
    assert not refused, refused
    windows = [ap.options.model_window for ap in plan.values()]
    if window:  # the local layers (all of them when the config has no layer types) run SALE inside the window
        local = [w for w in windows if w is not None]
        assert local and set(local) == {WINDOW}, windows
        if getattr(model.config, "layer_types", None) is not None:
            assert None in windows, windows  # the full-attention layer
    else:
        assert set(windows) == {None}, windows


def test_the_window_matters_in_these_configs():
    """The window test above is not vacuous: the windowed model's logits differ from the same weights' full
    attention (so a lowering that ignored the window would fail it)."""
    ids = torch.randint(1, 256, (1, SEQ), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = _model("mistral", False)(input_ids=ids).logits
        local = _model("mistral", True)(input_ids=ids).logits
    assert float((full - local).norm() / full.norm()) > 1e-3


def _window_mask(S: int, w: int) -> torch.Tensor:
    i = torch.arange(S)
    return ((i[None] <= i[:, None]) & (i[:, None] - i[None] < w))[None, None]


@pytest.mark.parametrize("given_window", [False, True], ids=["dense-fallback", "sale-window"])
@pytest.mark.parametrize("S,w,kv_heads,D", [(72, 16, 1, 16), (1, 16, 2, 16), (100, 24, 2, 256)])
def test_sale_op_never_attends_outside_the_window(S, w, kv_heads, D, given_window):
    """Given a sliding-window mask, qpass::sale_attention attends only inside it: values outside the window are
    huge, so any weight on them would show; the result equals SDPA with that mask (GQA down to one KV head,
    head dim 256, M = 1, a tail block).  Without `model_window` the mask is not causal, so the op runs dense with
    it; with it, SALE runs inside the window."""
    import qpass.kernels.sale.ops  # noqa: F401
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    H = 4
    q, k = (torch.randn(1, n, S, D, generator=g) for n in (H, kv_heads))
    v = torch.randn(1, kv_heads, S, D, generator=g)
    mask = _window_mask(S, w)
    v_far = v.clone()
    if S > w:
        v_far[:, :, : S - w] += 1e4  # keys outside the last query's window (earlier rows may see some)
    tau = torch.zeros(H)
    got = torch.ops.qpass.sale_attention(q, k, v_far, tau, None, 16, 16, 16, 16, 0, False, 1, mask,
                                         w if given_window else None)
    want = F.scaled_dot_product_attention(q, k, v_far, attn_mask=mask, enable_gqa=kv_heads != H)
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-4)
    if S > w:  # the last query's window excludes the shifted keys: no 1e4 in its output
        assert got[..., -1, :].abs().max() < 100


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_calibration_is_clipped_to_the_models_positions(family):
    """calib_tokens (4096) > the tiny configs' 256 positions: calibration clips to them with a note (it used to
    index past the position table: IndexError)."""
    model = _model(family, False)
    recipe = Recipe("sale-calib", weights=None, passes=[PassSpec("sale", {**OPTS, "calib_tokens": 4096})])
    qm = qpass.compile(model, recipe, progress=False, copy=True)
    log = qpass.report(qm).log
    assert any("calib_tokens 4096 > the model's 256 positions" in line for line in log), log
    assert qm.qpass_state.plan.attention and all(len(p.taus) == 4 for p in qm.qpass_state.plan.attention.values())


def test_windowed_layers_run_sale_not_a_dense_fallback():
    """τ = 0 equality alone would also hold if the op fell back to dense attention with the window mask: here, with
    τ that skip blocks, the lowered windowed model equals SALE's eager reference with the window (the same
    decisions) and differs from the model's own, and every SDPA node became `qpass::sale_attention` with the
    window as its `model_window` argument."""
    from test_sale import _graph_nodes

    model = _model("mistral", True)
    model.config.sliding_window = 112  # room for estimated blocks between the sink and SALE's local band
    seq = 160
    taus = {n: [0.5] * len(t) for n, t in _zero_taus(model).items()}
    opts = {**OPTS, "taus": taus}
    ids = torch.randint(1, model.config.vocab_size, (1, seq), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        own = model(input_ids=ids, use_cache=False).logits
        with use_sale(model, "sale", SaleOptions(**OPTS), taus) as ctx:
            eager = model(input_ids=ids, use_cache=False).logits
    kept = sum(v["kept"] for v in ctx.stats.values())
    assert 0 < kept < sum(v["causal"] for v in ctx.stats.values())  # blocks inside the window were skipped
    qm = qpass.compile(model, Recipe("sale-w", weights=None, passes=[PassSpec("sale", opts)]), progress=False,
                       copy=True)
    assert {ap.options.model_window for ap in qm.qpass_state.plan.attention.values()} == {112}
    with torch.no_grad():
        got = qm(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)
    assert float((got - own).norm() / own.norm()) > 1e-4
    nodes = [n for n in _graph_nodes(qm) if str(n.target) == "qpass.sale_attention.default"]
    assert len(nodes) == model.config.num_hidden_layers and all(n.args[-1] == 112 for n in nodes)


def test_calibration_measures_the_windowed_attention():
    """τ calibrated on a windowed layer: the tables measure against the windowed attention (a τ that keeps every
    block inside the window has zero error and keeps 100% of the window's blocks), the plan carries the window, and
    the calibrated lowering stays close to the model's own."""
    from qpass.passes.sale import head_tables

    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, n, 200, 16, generator=g) for n in (4, 2, 2))
    l1, kept = head_tables(q, k, v, 0.25, SaleOptions(**OPTS), [1e-30, 0.9], model_window=70)
    assert torch.all(kept[:, 0] == 1) and torch.all(l1[:, 0] < 1e-5), (kept, l1)
    assert torch.all(kept[:, 1] < 1) and torch.all(l1[:, 1] > 0)
    model = _model("mistral", True)
    model.config.sliding_window = 112
    recipe = Recipe("sale-cal", weights=None, passes=[PassSpec("sale", {**OPTS, "calib_tokens": 256,
                                                                        "tau_init": 0.5, "theta": 0.05})])
    qm = qpass.compile(model, recipe, progress=False, copy=True)
    plan = qm.qpass_state.plan.attention
    assert plan and all(ap.options.model_window == 112 and not ap.refused for ap in plan.values())
    assert any("local layers run SALE inside their sliding window (W = 112)" in line for line in qpass.report(qm).log)
    ids = torch.randint(1, model.config.vocab_size, (1, 200), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        own, got = model(input_ids=ids).logits, qm(input_ids=ids).logits
    assert float((got - own).norm() / own.norm()) < 0.05


def test_a_window_within_sales_band_stays_dense_local():
    """A window so short that SALE's always-kept blocks cover it (W 16 with 16-key blocks and a 16-key band) leaves
    nothing to skip: planned dense-local with that reason, lowered to the dense op, logits equal the model's own."""
    model = _model("mistral", True)
    model.config.sliding_window = 16
    qm = _compile_zero_tau(model)
    plan = qm.qpass_state.plan.attention
    assert plan and all("so SALE would skip nothing" in ap.refused for ap in plan.values()), plan
    outcome = qpass.report(qm).attention_lowering
    assert all(outcome[n] == "unmatched: " + ap.refused for n, ap in plan.items())
    ids = torch.randint(1, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(qm(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_windowed_sale_survives_save_and_load(tmp_path):
    """The window is an argument of the saved program's `qpass::sale_attention` calls: the reloaded model gives the
    lowered model's logits (which differ from the dense model's: SALE ran, inside the window)."""
    model = _model("mistral", True)
    model.config.sliding_window = 112
    taus = {n: [0.5] * len(t) for n, t in _zero_taus(model).items()}
    qm = qpass.compile(model, Recipe("sale-w", weights=None, passes=[PassSpec("sale", {**OPTS, "taus": taus})]),
                       progress=False, copy=True)
    ids = torch.randint(1, model.config.vocab_size, (1, 160), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, own = qm(input_ids=ids, use_cache=False).logits, model(input_ids=ids, use_cache=False).logits
    qpass.save(qm, tmp_path / "m", example=ids)
    with torch.no_grad():
        got = qpass.load(tmp_path / "m")(ids)
    got = got.logits if hasattr(got, "logits") else got
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((want - own).abs().max()) > 1e-2
