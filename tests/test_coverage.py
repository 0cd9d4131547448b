"""The model-family coverage matrix (docs/coverage.md, tests/coverage_matrix.py) in CI.

Every cell measured here must keep the invariants (no crash, no silent skip, lowered logits within tolerance of
the fake-quant graph, reload gives the same logits) and say exactly what docs/coverage.md says. Cells that do
not work today (a site not lowered, MoE experts not quantized, a reload refused) are reasons on the page, not
failures here. The whole matrix takes ≈ 30 min on 2 CPU cores, so CI measures one row and one column of it:
every family with the default preset and every preset with llama; the page's other cells are measured by
`python tests/coverage_matrix.py --write`.
"""
from __future__ import annotations

import functools
import math

import pytest

import qpass
from coverage_matrix import (COVERAGE_MD, REGENERATE, Cell, broken_invariants, cell_text, coverage_cell,
                             documented_cells, render)
from tiny_models import CONFIGS, tiny_model

FAMILIES, PRESETS = list(CONFIGS), list(qpass.recipes())
CI_CELLS = [(family, "w4a16") for family in FAMILIES] + [("llama", p) for p in PRESETS if p != "w4a16"]


@functools.cache
def _cell(family: str, preset: str) -> Cell:
    return coverage_cell(family, lambda: tiny_model(family), preset)


def _page() -> dict[tuple[str, str], str]:
    assert COVERAGE_MD.exists(), f"docs/coverage.md is missing: run `{REGENERATE}`"
    return documented_cells(COVERAGE_MD.read_text())


@pytest.mark.parametrize("family, preset", CI_CELLS)
def test_cell_keeps_the_invariants(family, preset):
    broken = broken_invariants(_cell(family, preset))
    assert not broken, f"{family} × {preset}: " + "; ".join(broken)


@pytest.mark.parametrize("family, preset", CI_CELLS)
def test_cell_is_what_the_page_says(family, preset):
    documented, measured = _page().get((family, preset)), cell_text(_cell(family, preset))
    assert documented == measured, (f"docs/coverage.md is stale: {family} × {preset} says {documented!r}, "
                                    f"measured {measured!r}; run `{REGENERATE} --families {family} --presets {preset}` (this cell only; "
                                    f"without the options every cell, ≈ 30 min)")


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
