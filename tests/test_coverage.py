"""The model-family coverage matrix (docs/coverage.md, tests/coverage_matrix.py) in CI: every cell of it.

Every cell must keep the invariants (no crash, no silent skip, lowered logits within tolerance of the fake-quant
graph, reload gives the same logits where it is checked) and say exactly what docs/coverage.md says. Cells that
do not work today (a site not lowered, MoE experts not quantized, a reload refused) are reasons on the page, not
failures here. The whole matrix (families × presets) is measured once per session in coverage_matrix.WORKERS
processes: one Dynamo capture per family and example input, each preset on a fork of it (a trace was ≈ 85 % of a
cell); `test_presets_on_forks_of_one_capture_are_what_qpass_compile_gives` holds that path to
`qpass.compile`'s.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

import qpass
from coverage_matrix import (COVERAGE_MD, REGENERATE, Cell, _ids, broken_invariants, calibration_for, cell_text,
                             documented_cells, fake_quant_logits, forked_failures, forked_outcomes, in_worker, measure,
                             reload_checked, render, report_summary)
from tiny_models import CONFIGS, tiny_model

FAMILIES, PRESETS = list(CONFIGS), list(qpass.recipes())
CELLS = [(family, preset) for family in FAMILIES for preset in PRESETS]


@functools.cache
def _matrix() -> dict[tuple[str, str], Cell]:
    return measure(FAMILIES, PRESETS)


def _cell(family: str, preset: str) -> Cell:
    return _matrix()[family, preset]


def _page() -> dict[tuple[str, str], str]:
    assert COVERAGE_MD.exists(), f"docs/coverage.md is missing: run `{REGENERATE}`"
    return documented_cells(COVERAGE_MD.read_text())


@pytest.mark.parametrize("family, preset", CELLS)
def test_cell_keeps_the_invariants(family, preset):
    broken = broken_invariants(_cell(family, preset))
    assert not broken, f"{family} × {preset}: " + "; ".join(broken)


@pytest.mark.parametrize("family, preset", CELLS)
def test_cell_is_what_the_page_says(family, preset):
    documented, measured = _page().get((family, preset)), cell_text(_cell(family, preset))
    assert documented == measured, (f"docs/coverage.md is stale: {family} × {preset} says {documented!r}, "
                                    f"measured {measured!r}; run `{REGENERATE} --families {family} --presets {preset}` (this cell only; "
                                    f"without the options every cell)")


def test_page_has_a_row_per_family_and_a_column_per_preset():
    cells = _page()
    rows, columns = list(dict.fromkeys(f for f, _ in cells)), list(dict.fromkeys(p for _, p in cells))
    assert (rows, columns) == (FAMILIES, PRESETS), (
        f"docs/coverage.md has rows {rows} and columns {columns}; tests/tiny_models.py has {FAMILIES} and "
        f"qpass.recipes() {PRESETS}: run `{REGENERATE}`")


def _synthetic(**fields) -> Cell:
    """A cell that passes every check, with `fields` changed."""
    ok = dict(family="llama", preset="w8a8", graph_breaks=0, sites=3, quantized=2, lowered=2, logit_diff=0.0,
              reload_diff=0.0)
    return Cell(**{**ok, **fields})


def test_invariants_catch_crashes_silent_skips_and_wrong_numbers():
    assert broken_invariants(_synthetic()) == []
    for bad in (dict(error="save: RuntimeError: boom"), dict(graph_breaks=1), dict(logit_diff=math.nan), dict(reload_diff=0.1),
                dict(lowered=1, not_lowered={"a": "not seen in a compiled graph"}),
                dict(full_precision={"b": "not planned by the recipe"}), dict(quantized=0, lowered=0)):
        assert broken_invariants(_synthetic(**bad)), bad


def test_page_cells_read_back_with_their_notes():
    cells = {("llama", "w8a8"): _synthetic(),
             ("llama", "w4a8"): _synthetic(lowered=1, not_lowered={"model.layers.0.mlp.down_proj": "group 64"}),
             ("gpt2", "w8a8"): _synthetic(reload_refused="qpass.load: op x | y [z]"),
             ("gpt2", "w4a8"): _synthetic(lowered=1, not_lowered={"h.1.mlp.c_proj": "group 64"})}
    page = render({key: cell_text(cell) for key, cell in cells.items()}, ["llama", "gpt2"], ["w8a8", "w4a8"])
    assert page.count("group 64") == 1 and "1. group 64" in page  # one numbered note for both cells
    assert documented_cells(page) == {key: cell_text(cell) for key, cell in cells.items()}


def test_reloaded_cells_are_marked_and_cover_every_row_and_column():
    assert cell_text(_synthetic()).endswith(" ↻") and not cell_text(_synthetic(reload_checked=False)).endswith("↻")
    reloaded = [(f, p) for f, p in CELLS if reload_checked(f, p)]
    assert {f for f, _ in reloaded} == set(FAMILIES) and {p for _, p in reloaded} == set(PRESETS)


@pytest.mark.parametrize("family", ["llama"])
def test_reference_is_a_fresh_trace_of_the_models_plan(family):
    """The matrix's fake-quant reference (the cell's own capture run through `quantize_transform(plan,
    lower=False)`) gives the logits a fresh trace of the model with that transform gives — after rotated and
    migrated weights too — without tracing again, and the model runs its lowered graph again after it."""
    from qpass.capture import compile_forward
    from qpass.lowering.lower import quantize_transform

    for preset in ("w4a8-qsm", "w4a4-rot"):
        model = tiny_model(family)
        calib = [_ids(model.config.vocab_size, (2, 32), 1)]
        qmodel = qpass.compile(model, preset, calib, progress=False, copy=True)
        counter = qmodel.qpass_state.graph_counter
        ids = _ids(model.config.vocab_size, (2, 32), 0)
        with torch.no_grad():
            lowered = qmodel(input_ids=ids, use_cache=False).logits
            graphs = counter.graphs
            got = fake_quant_logits(qmodel, ids)
            assert counter.graphs == graphs == 1  # one trace for compile, calibration and the reference
            assert torch.equal(qmodel(input_ids=ids, use_cache=False).logits, lowered)  # the lowering is back
            fresh, _ = compile_forward(qmodel, quantize_transform(qmodel.qpass_state.plan, lower=False))
            expected = fresh(input_ids=ids, use_cache=False).logits
            unquantized = type(qmodel).forward(qmodel, input_ids=ids, use_cache=False).logits
        assert torch.equal(got, expected), f"{family} × {preset}: {float((got - expected).abs().max()):.2e}"
        assert not torch.equal(got, unquantized)  # the reference did quantize
        assert not torch.equal(got, lowered)  # and is not the lowered graph (int kernels round differently)


def test_presets_on_forks_of_one_capture_are_what_qpass_compile_gives():
    """The matrix's path (coverage_matrix.forked_outcomes, as `measure` runs cells): two presets that both fold
    into the weights, each on a fork of one captured model, give the logits, report and plan log of a fresh
    `qpass.compile` — the first preset's changes do not reach the second — and the captured model is left as it
    was."""
    presets = ["w4a8-qsm", "w4a4-rot"]
    outcomes, unchanged = in_worker(forked_outcomes, "llama", presets)
    assert unchanged
    for preset in presets:
        model = tiny_model("llama")
        calib = calibration_for(preset, model.config.vocab_size)
        compiled = qpass.compile(model, preset, calib, progress=False)
        logits, summary, log = outcomes[preset]
        with torch.no_grad():
            expected = compiled(input_ids=_ids(model.config.vocab_size, tuple(logits.shape[:2]), 0),
                                use_cache=False).logits
        assert torch.equal(logits, expected), preset
        assert summary == report_summary(compiled)
        assert log == compiled.qpass_state.plan.log


def test_a_forked_cell_that_fails_says_how():
    assert in_worker(forked_failures) == ["ValueError: boom", "the forked process ended by signal 9"]
