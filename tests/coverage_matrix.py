"""The model-family coverage matrix: every tiny architecture of tests/tiny_models.py × every preset.

A cell compiles the family's tiny random-weight model with the preset through the public API and records what
happened: graph breaks, linear sites quantized and lowered (with the report's reasons for the others), weights
the analysis could not quantize, the lowered logits against the fake-quant reference, and — on the cells
`reload_checked` picks — a save → reload round trip. `render` turns the cells into docs/coverage.md;
tests/test_coverage.py measures every cell in CI, checks the invariants and that the file says what it measured.

    python tests/coverage_matrix.py --write                     # every cell, in a pool of 2 processes
    python tests/coverage_matrix.py --write --presets w4a8-qsm  # one column; the page keeps the other cells
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import re
import signal
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from qpass.api import Capture

ROOT = Path(__file__).resolve().parents[1]
COVERAGE_MD = ROOT / "docs" / "coverage.md"
REGENERATE = "python tests/coverage_matrix.py --write"

LOGIT_TOLERANCE = 1e-3  # relative L2, lowered vs fake-quant: int GEMMs round the activation step differently
RELOAD_TOLERANCE = 1e-5  # relative L2, reloaded vs compiled: the same graph and weights, so only op order may differ
# save → reload (two torch.export traces and a load: ≈ 30 times the rest of a cell) runs on a wrapped diagonal
# (`reload_checked`): every family and every preset at least once
WORKERS = 2  # processes measuring cells (CI and this machine have 2 cores)


@dataclass
class Cell:
    family: str
    preset: str
    graph_breaks: int | None = None
    sites: int = 0  # linear sites the analysis found
    quantized: int = 0
    lowered: int = 0
    not_lowered: dict[str, str] = field(default_factory=dict)  # quantized site -> the report's reason
    full_precision: dict[str, str] = field(default_factory=dict)  # site left in FP, not by an ignore pattern
    unsupported: list[str] = field(default_factory=list)  # weight uses the analysis could not quantize
    attention_planned: int = 0  # attention modules with a plan (SALE)
    attention_lowered: int = 0  # of those, lowered to the planned method
    attention_not_lowered: dict[str, str] = field(default_factory=dict)  # planned module -> the report's reason
    logit_diff: float | None = None  # relative L2, lowered vs the fake-quant graph of the same plan
    reload_diff: float | None = None  # relative L2, qpass.load(qpass.save(...)) vs the compiled model
    reload_refused: str | None = None  # qpass.load's LoadError: the saved program holds what load does not trust
    reload_checked: bool = True  # save → reload ran (`reload_checked`)
    error: str | None = None  # "<stage>: <exception>" when a stage crashed (later stages did not run)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (not on the page)
    cpu_seconds: float = 0.0  # the whole cell's CPU time in its process: its cost on an idle machine


def reload_checked(family: str, preset: str) -> bool:
    """Whether the matrix runs save → reload on this cell: a diagonal of tests/tiny_models.py's families ×
    qpass.recipes() wrapped around the shorter side, so that every row and every column has a reloaded cell."""
    import qpass
    from tiny_models import CONFIGS

    f, p = list(CONFIGS).index(family), list(qpass.recipes()).index(preset)
    n_families, n_presets = len(CONFIGS), len(qpass.recipes())
    return p % n_families == f if n_presets >= n_families else f % n_presets == p


def _ids(vocab: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def fake_quant_logits(qmodel, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of the fake-quant graph of `qmodel`'s own plan (what `lower=False` runs): the graphs
    qpass.compile captured, run through `quantize_transform(plan, lower=False)` instead of the lowering — no new
    trace (checked equal to a fresh trace in tests/test_coverage.py). The lowered transform is put back after."""
    from qpass.lowering.lower import quantize_transform

    state = qmodel.qpass_state
    state.graphs.retransform(quantize_transform(state.plan, lower=False))
    try:
        with torch.no_grad():
            return qmodel(input_ids=input_ids, use_cache=False).logits
    finally:
        state.graphs.retransform(state.transform)


def _read_report(cell: Cell, qmodel) -> None:
    import qpass

    report = qpass.report(qmodel)
    cell.graph_breaks = report.summary()["graph_breaks"]
    cell.sites, cell.quantized = len(report.rows), len(report.quantized)
    cell.lowered = report.summary()["lowered"]
    cell.not_lowered = {r.name: r.lowering.removeprefix("unmatched: ") for r in report.quantized
                        if not r.lowering or r.lowering.startswith("unmatched")}
    cell.full_precision = {r.name: r.reason for r in report.rows
                           if r.status != "quantized" and not r.reason.startswith("ignored")}
    cell.unsupported = [f"{u['op']} on {u['tensor']}: {u['reason']}" for u in report.unsupported]
    planned = qmodel.qpass_state.plan.attention
    cell.attention_planned = len(planned)
    cell.attention_lowered = sum(report.attention_lowering.get(name) == plan.method for name, plan in planned.items())
    cell.attention_not_lowered = {
        name: report.attention_lowering.get(name, "unmatched: not seen in a compiled graph").removeprefix("unmatched: ")
        for name, plan in planned.items() if report.attention_lowering.get(name) != plan.method}


def calibrates(preset: str) -> bool:
    """Whether `preset` reads data (then qpass.compile captures on the calibration batch)."""
    import qpass

    return qpass.recipes()[preset].reads_data


def calibration_for(preset: str, vocab: int) -> list[torch.Tensor] | None:
    """The smallest data that exercises calibration (GPTQ's Hessian, QSM's steps, SALE's τ): one batch 2 × 32,
    for the presets that read data; None for the others."""
    return [_ids(vocab, (2, 32), 1)] if calibrates(preset) else None


def coverage_cell(family: str, preset: str, model: torch.nn.Module, captured: Capture,
                  calib: list[torch.Tensor] | None, reload: bool = True) -> Cell:
    """Quantize `model` with `preset` through `qpass.compile`'s steps after its capture (`quantize_captured`, on
    `captured`: `capture_analysis(model, _example_input(model, calib))`) and measure one cell (save → reload only
    with `reload`); a crash ends the cell with `error` set. `model` is quantized in place: `measure` runs each
    cell on a fork of the family's captured model."""
    import qpass
    from qpass.api import quantize_captured
    from qpass.export import LoadError

    cell = Cell(family, preset, reload_checked=reload)
    vocab = model.config.vocab_size
    # the shape the capture ran at: another shape would trace the model again (a dynamic graph, a second of
    # every cell); the dynamic-shape graphs are checked by save (torch.export, batch and length dynamic)
    ids = _ids(vocab, tuple(captured.example.shape), 0)
    stage, start, cpu_start = "compile", time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        cell.seconds[name], start = round(now - start, 2), now

    try:
        qmodel = quantize_captured(model, qpass.recipes()[preset], captured, calib, progress=False)
        _read_report(cell, qmodel)
        with torch.no_grad():
            lowered = qmodel(input_ids=ids, use_cache=False).logits
            lap("compile")
            stage = "fake-quant reference"
            if cell.lowered or cell.attention_lowered:  # else the compiled graph is the fake-quant graph
                cell.logit_diff = _relative(lowered, fake_quant_logits(qmodel, ids))
                if cell.logit_diff > LOGIT_TOLERANCE:  # one input's rounding flip, or wrong on every input?
                    more = [_ids(vocab, tuple(ids.shape), seed) for seed in (2, 3)]
                    diffs = [cell.logit_diff] + [_relative(qmodel(input_ids=i, use_cache=False).logits,
                                                           fake_quant_logits(qmodel, i)) for i in more]
                    cell.logit_diff = sorted(diffs)[1]
            lap("fake-quant reference")
            if reload:
                with tempfile.TemporaryDirectory() as tmp:
                    stage = "save"
                    qpass.save(qmodel, Path(tmp) / "model")
                    stage = "reload"
                    try:
                        loaded = qpass.load(Path(tmp) / "model")
                    except LoadError as e:  # a refusal by design (allow-list), not a crash
                        cell.reload_refused = _first_line(e).replace(str(Path(tmp) / "model"), "<saved>")
                    else:
                        cell.reload_diff = _relative(loaded(ids), lowered)
                lap("save → reload")
    except Exception as e:  # recorded: the doc shows it, and tests/test_coverage.py fails on it
        cell.error = f"{stage}: {type(e).__name__}: {_first_line(e)}"
    cell.cpu_seconds = round(time.process_time() - cpu_start, 2)
    return cell


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:300]


# -- invariants -------------------------------------------------------------------------------------------------


def _within(diff: float | None, tolerance: float) -> bool:
    return diff is None or diff <= tolerance  # NaN fails


def broken_invariants(cell: Cell) -> list[str]:
    """What must hold in every cell, working or not: no crash, no silent skip, no wrong numbers."""
    out = []
    if cell.error:
        out.append(f"crashed at {cell.error}")
        return out
    if cell.graph_breaks:  # every family captures in one graph today
        out.append(f"capture: {cell.graph_breaks} graph breaks")
    silent = [s for s, why in (cell.not_lowered | cell.attention_not_lowered).items()
              if not why or why == "not seen in a compiled graph"]
    if silent:
        out.append(f"quantized sites or planned attention modules neither lowered nor given a reason: {silent}")
    if cell.quantized and any(why in ("", "not planned by the recipe") for why in cell.full_precision.values()):
        out.append(f"sites left in full precision without a reason: {cell.full_precision}")
    if not cell.quantized and not cell.attention_planned:
        out.append("the preset changed nothing (no site quantized, no attention planned)")
    if not _within(cell.logit_diff, LOGIT_TOLERANCE):
        out.append(f"lowered logits differ from the fake-quant graph by {cell.logit_diff:.2e} (relative L2)")
    if not _within(cell.reload_diff, RELOAD_TOLERANCE):
        out.append(f"reloaded logits differ from the compiled model by {cell.reload_diff:.2e} (relative L2)")
    return out


# -- docs/coverage.md ------------------------------------------------------------------------------------------


def _generic(text: str) -> str:
    """A reason without layer indices (one note serves every layer and every family sharing it), table-safe."""
    return re.sub(r"\.\d+\.", ".N.", text).translate(str.maketrans("|[]", "/()"))


def _problems(cell: Cell) -> list[tuple[str, str]]:
    """(short text, note or "") for every check the cell fails, in the order they run."""
    if cell.error:
        stage, _, detail = cell.error.partition(": ")
        return [(f"{stage} crashed", _generic(detail))]
    out = []
    if cell.graph_breaks:
        out.append((f"capture: {cell.graph_breaks} graph breaks", ""))
    if cell.unsupported:
        out.append((f"{len(cell.unsupported)} weights not quantized", "; ".join(sorted({_generic(u) for u in cell.unsupported}))))
    if cell.full_precision and cell.quantized:
        reasons = sorted({_generic(r) for r in cell.full_precision.values()})
        out.append((f"{len(cell.full_precision)} sites in FP", "; ".join(reasons)))
    if cell.quantized and cell.lowered < cell.quantized:
        reasons = sorted({_generic(r) for r in cell.not_lowered.values()})
        out.append((f"{cell.lowered} of {cell.quantized} lowered", "; ".join(reasons)))
    if cell.attention_planned and cell.attention_lowered < cell.attention_planned:
        reasons = sorted({_generic(r) for r in cell.attention_not_lowered.values()})
        out.append((f"attention {cell.attention_lowered} of {cell.attention_planned} lowered", "; ".join(reasons)))
    if not cell.quantized and not cell.attention_planned:
        out.append(("nothing quantized", ""))
    if not _within(cell.logit_diff, LOGIT_TOLERANCE):
        out.append((f"logits differ by {cell.logit_diff:.0e}", ""))
    if cell.reload_refused:
        out.append(("reload refused", _generic(cell.reload_refused)))
    if not _within(cell.reload_diff, RELOAD_TOLERANCE):
        out.append((f"reload differs by {cell.reload_diff:.0e}", ""))
    return out


def cell_text(cell: Cell) -> str:
    """What the page says in the cell: ✓ and lowered/quantized, or each failed check with its note in brackets
    (`render` numbers the notes)."""
    problems = _problems(cell)
    if problems:
        return "; ".join(text + (f" [{note}]" if note else "") for text, note in problems)
    mark = " ↻" if cell.reload_checked else ""
    if cell.quantized:
        return f"✓ {cell.lowered}/{cell.quantized}{mark}"
    return f"✓ attention {cell.attention_lowered}/{cell.attention_planned}{mark}"


HEADER = f"""# Model-family coverage

Generated by `{REGENERATE}` from the tiny random-weight models of `tests/tiny_models.py` (hidden 64, 2 layers,
vocab 256) in a pool of {WORKERS} processes (`--families` / `--presets` re-measure only those rows / columns; `--times`
prints each cell's seconds). `tests/test_coverage.py` measures every cell in CI the same way, checks the
invariants, and fails when a cell differs from this page (the whole matrix: 284 CPU s, 203 s wall alone on 2
cores, 290 s inside the CI suite — half of it the 18 save → reload cells; 1,287 CPU s and 718 s before the capture
was shared, 410 CPU s and 443 s in the suite before symbolic traces ran without FakeTensor's dispatch cache:
docs/lowering.md). Do not edit by hand.

Each cell runs what `qpass.compile(model, preset, calib)` runs (calibration, for the presets that read data: one
batch of 2 × 32 random tokens): the capture is shared, since it does not depend on the preset — each family's
model is captured by Dynamo once per example input (1 × 8 tokens for data-free presets, the calibration batch
for the others: `qpass.compile` captures on these), and each preset then quantizes a fork of that process
(`qpass.api.quantize_captured`, the steps of `qpass.compile` after its capture), so that what a preset does to
the model stays in its fork. A cell then checks, in order:

1. **capture**: Dynamo captures the model in one graph (0 graph breaks);
2. **quantized**: every linear site not ignored by the recipe (`lm_head`) is quantized, and no weight is used by
   an op the analysis cannot quantize (e.g. the 3-D expert tensors of MoE layers);
3. **lowered**: every quantized site runs a `qpass::` kernel op (otherwise the report's reason), and every
   planned attention module its planned kernel;
4. **logits**: the lowered model's logits are within {LOGIT_TOLERANCE:g} (relative L2) of the fake-quant graph
   of the same plan, on random tokens of the shape `qpass.compile` captured the model at (1 × 8, or 2 × 32
   with calibration), called as `qpass.compile` called it (`use_cache=False`): the graph checked is the one the
   report's lowering was read from, and another kind of call could trace the model again (a second per cell);
   past the tolerance, the median over that input and two more (an activation code that rounds the other way at
   a rounding boundary moves a 64-wide model's logits by ≈ 1e-3 on one input; a wrong kernel shows on every
   input). The fake-quant graph is what `lower=False` runs: the graphs `qpass.compile` captured for the cell (its
   one Dynamo trace) run through `quantize_transform(plan, lower=False)` instead of the lowering, without a new
   trace; the test checks it equals a fresh trace's graph;
5. **save → reload**, on the cells marked ↻ (a diagonal wrapped around the table, so that every family and
   every preset has one; a save and a load are two `torch.export` traces and a load, ≈ 8 s where the rest of a
   cell takes ≈ 0.3 s, so not every cell):
   `qpass.load(qpass.save(...))` loads and gives the same logits (within {RELOAD_TOLERANCE:g}). The saved
   program has dynamic batch and length, so these cells also check the lowering on symbolic shapes.

On CPU the `qpass::` ops run their pure-torch references: the cells check capture, planning, lowering and
export, not the Triton kernels, which `tests/kernels/` checks against the same references under the Triton
interpreter. A cell says ✓ and *lowered/quantized* linear sites (for attention-only presets, attention modules)
when every check passes; otherwise each failed check, with the reason in the numbered notes below the table.
"""


def render(texts: dict[tuple[str, str], str], families: list[str], presets: list[str]) -> str:
    """docs/coverage.md from each cell's `cell_text`, keyed by (family, preset): notes numbered in table order."""
    notes: list[str] = []

    def numbered(m: re.Match) -> str:
        if m.group(1) not in notes:
            notes.append(m.group(1))
        return f" [{notes.index(m.group(1)) + 1}]"

    lines = ["| family | " + " | ".join(f"`{p}`" for p in presets) + " |", "|---" * (len(presets) + 1) + "|"]
    for family in families:
        row = [re.sub(r" \[([^\[\]]+)\]", numbered, texts[family, p]) for p in presets]
        lines.append(f"| {family} | " + " | ".join(row) + " |")
    footer = ["", "Notes:", ""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return HEADER + "\n" + "\n".join(lines + (footer if notes else [])) + "\n"


def documented_cells(text: str) -> dict[tuple[str, str], str]:
    """The cells of a rendered page, keyed by (family, preset), with each note number replaced by its text (the
    form `cell_text` gives by default), so that one cell compares without the rest of the matrix."""
    notes = dict(re.findall(r"^(\d+)\. (.*)$", text, flags=re.M))
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    presets = [p.strip().strip("`") for p in rows[0][1:]]
    resolve = lambda cell: re.sub(r" \[(\d+)\]", lambda m: f" [{notes[m.group(1)]}]", cell.strip())  # noqa: E731
    return {(row[0].strip(), p): resolve(c) for row in rows[1:] for p, c in zip(presets, row[1:])}


class MatrixError(RuntimeError):
    """A forked cell's process failed outside what the cell records (a bug of the matrix, a killed process)."""


def _forked(work: Callable[[], object]) -> object:
    """`work()` in a forked child process, its result pickled back through a pipe: what the work does to the
    model (passes fold into its weights, the lowering packs them) stays in the child, and the parent's model and
    capture stay as captured. Fork only where no other thread runs and torch uses one intra-op thread (`measure`'s
    spawned workers, `in_worker`): a fork of a threaded process can hang in the child. Raises MatrixError with the
    child's error, or how the child ended."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write the result, then exit here, whatever happens (never return into the caller)
        code = 1
        try:
            os.close(read)
            try:
                payload = pickle.dumps((True, work()))
            except BaseException as e:
                traceback.print_exc()
                payload = pickle.dumps((False, f"{type(e).__name__}: {_first_line(e)}"))
            with os.fdopen(write, "wb") as out:
                out.write(payload)
            code = 0
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise MatrixError(f"the forked process ended by signal {-code}" if code < 0 else
                          f"the forked process exited with code {code}")
    ok, value = pickle.loads(payload)
    if not ok:
        raise MatrixError(value)
    return value


def _captured_family(family: str, preset: str) -> tuple[torch.nn.Module, list[torch.Tensor] | None, Capture]:
    """(model, calibration, capture) of `family`'s tiny model as `qpass.compile` would capture it for `preset`
    (and for every preset of its group: `_groups`)."""
    from qpass.api import _example_input, capture_analysis
    from tiny_models import tiny_model

    model = tiny_model(family)
    calib = calibration_for(preset, model.config.vocab_size)
    return model, calib, capture_analysis(model, _example_input(model, calib))


def report_summary(qmodel) -> dict:
    """`qpass.report(qmodel).summary()` without its timings (equal for the same work)."""
    import qpass

    return {k: v for k, v in qpass.report(qmodel).summary().items() if "time" not in k}


def _measure_group(family: str, presets: list[str]) -> list[Cell]:
    """The cells of one family whose presets capture the model on the same example (all calibrating presets, or
    all data-free ones): one Dynamo capture of the family's model, then each preset quantizes a fork of it —
    what `qpass.compile` does after its capture, without tracing again (a trace is most of a cell)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        model, calib, captured = _captured_family(family, presets[0])
    except Exception as e:  # as qpass.compile would fail: every cell of the group says so
        return [Cell(family, p, error=f"compile: {type(e).__name__}: {_first_line(e)}") for p in presets]
    capture_seconds, capture_cpu = round(time.perf_counter() - start, 2), time.process_time() - cpu_start
    cells = []
    for p in presets:
        try:
            cells.append(_forked(functools.partial(coverage_cell, family, p, model, captured, calib,
                                                   reload_checked(family, p))))
        except MatrixError as e:
            cells.append(Cell(family, p, error=f"matrix: MatrixError: {e}"))
    cells[0].seconds = {"capture": capture_seconds, **cells[0].seconds}  # counted once, on the group's first cell
    cells[0].cpu_seconds = round(cells[0].cpu_seconds + capture_cpu, 2)
    return cells


def forked_outcomes(family: str, presets: list[str]) -> tuple[dict[str, tuple], bool]:
    """What `measure`'s path gives for `presets` (one calibrating group): each preset quantizes a fork of one
    capture of the family's model; per preset (logits on the captured shape, report summary without its time,
    plan log), and whether the captured model's tensors are unchanged after them. For tests/test_coverage.py."""
    import qpass
    from qpass.api import quantize_captured

    model, calib, captured = _captured_family(family, presets[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}  # as captured, before any fork
    ids = _ids(model.config.vocab_size, tuple(captured.example.shape), 0)

    def outcome(preset: str) -> tuple:
        qmodel = quantize_captured(model, qpass.recipes()[preset], captured, calib, progress=False)
        with torch.no_grad():
            logits = qmodel(input_ids=ids, use_cache=False).logits
        return logits, report_summary(qmodel), qmodel.qpass_state.plan.log

    outcomes = {p: _forked(functools.partial(outcome, p)) for p in presets}
    after = model.state_dict()
    return outcomes, before.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in before.items())


def forked_failures() -> list[str]:
    """How `_forked` reports a child whose work raises and one that is killed (for tests/test_coverage.py)."""
    def raises():
        raise ValueError("boom")

    def killed():
        os.kill(os.getpid(), signal.SIGKILL)

    out = []
    for work in (raises, killed):
        try:
            _forked(work)
        except MatrixError as e:
            out.append(str(e))
    return out


def _worker_init() -> None:
    from tqdm import tqdm

    torch.set_num_threads(1)  # one core per process: the tiny models gain nothing from intra-op threads
    tqdm.get_lock()  # made once here: each fork would make (and, leaving by os._exit, leak) a semaphore of its own


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh processes (a fresh Dynamo and torch state each, no thread but the main one, one intra-op thread:
    where `_forked` is safe)."""
    return ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)


def in_worker(fn: Callable, *args):
    """fn(*args) in a fresh spawned process (`_spawn_pool`): how a test runs `_forked` from a pytest process."""
    with _spawn_pool(1) as pool:
        return pool.submit(fn, *args).result()


# a group's capture, in units of a data-free cell without save → reload (≈ 0.27 s; `--times`, 2026-12-05):
# a capture ≈ 3.5 s, a save → reload ≈ 7.9 s, a calibrating cell ≈ 0.55 s
CAPTURE_COST, RELOAD_COST, CALIBRATING_COST = 13, 29, 2


def _groups(families: list[str], presets: list[str]) -> list[tuple[str, list[str]]]:
    """(family, presets) that share a capture, longest first (`CAPTURE_COST`, ...), so that the pool's processes
    finish together."""
    def cost(preset: str, family: str) -> float:
        return (CALIBRATING_COST if calibrates(preset) else 1) + RELOAD_COST * reload_checked(family, preset)

    groups = [(f, [p for p in presets if calibrates(p) == kind]) for f in families for kind in (True, False)]
    groups = [(f, ps) for f, ps in groups if ps]
    return sorted(groups, key=lambda g: CAPTURE_COST + sum(cost(p, g[0]) for p in g[1]), reverse=True)


def measure(families: list[str], presets: list[str], workers: int = WORKERS) -> dict[tuple[str, str], Cell]:
    """Every (family, preset) cell, in `workers` spawned processes (`_spawn_pool`), one capture per group of
    `_groups`, each cell on a fork of its group's process."""
    if not hasattr(os, "fork"):
        raise RuntimeError("the coverage matrix forks a process per cell (os.fork): POSIX only")
    groups = _groups(families, presets)
    if not groups:
        return {}
    with _spawn_pool(workers) as pool:
        cells = {(c.family, c.preset): c for group in pool.map(_measure_group, *zip(*groups)) for c in group}
    return {(f, p): cells[f, p] for f in families for p in presets}


def main(argv: list[str]) -> int:
    import argparse

    import qpass
    from tiny_models import CONFIGS

    families, presets = list(CONFIGS), list(qpass.recipes())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {COVERAGE_MD.relative_to(ROOT)}")
    parser.add_argument("--families", default=",".join(families), help="measure these rows only (comma-separated); "
                        "the page's other cells are kept as they are")
    parser.add_argument("--presets", default=",".join(presets), help="measure these columns only")
    parser.add_argument("--workers", type=int, default=WORKERS, help="processes measuring cells")
    parser.add_argument("--times", action="store_true", help="print each cell's seconds per stage")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cells = measure(args.families.split(","), args.presets.split(","), args.workers)
    if args.times:
        for c in cells.values():
            print(f"{c.family} × {c.preset}: {c.seconds}, CPU {c.cpu_seconds} s")
        stages = sorted({k for c in cells.values() for k in c.seconds})
        print("total per stage:", {k: round(sum(c.seconds.get(k, 0) for c in cells.values()), 1) for k in stages})
        cpu = sum(c.cpu_seconds for c in cells.values())
        print(f"CPU seconds of all cells: {cpu:.0f} (/ {args.workers} processes: {cpu / args.workers:.0f} s on an "
              f"idle machine); wall: {time.perf_counter() - start:.0f} s")
    texts = documented_cells(COVERAGE_MD.read_text()) if COVERAGE_MD.exists() else {}
    texts |= {key: cell_text(cell) for key, cell in cells.items()}
    missing = [key for key in ((f, p) for f in families for p in presets) if key not in texts]
    if missing:
        parser.error(f"the page has no cell for {missing[:3]}...: measure them (all, by default)")
    text = render(texts, families, presets)
    if args.write:
        COVERAGE_MD.write_text(text)
        print(f"wrote {COVERAGE_MD.relative_to(ROOT)}: {len(cells)} cells measured in "
              f"{time.perf_counter() - start:.0f} s ({args.workers} processes)")
    else:
        print(text)
    broken = [f"{c.family} × {c.preset}: {b}" for c in cells.values() for b in broken_invariants(c)]
    print("\n".join(broken) or "every invariant holds")
    return 1 if broken else 0


if __name__ == "__main__":
    import os

    os.environ.setdefault("TRITON_INTERPRET", "1")  # as tests/conftest.py: CI's setting, before triton loads
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main(sys.argv[1:]))
