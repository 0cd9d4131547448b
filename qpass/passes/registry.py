"""The one table of passes: recipe name -> the pass function, its options type, what it needs from calibration.

A pass is `run(ctx: PassContext, options) -> None`; it reads and edits `ctx` (the model copy, the plan). Its
entry declares everything the driver needs to know before running it: the options dataclass (validated once,
when the recipe is — `PassSpec.options` is then an instance of it), whether it needs calibration data, the
optional calibration statistics it reads (`statistics(options) -> ChannelObserver keyword options`), whether it
edits the model's weights, whether (given its options) it runs the model on data of its own accord, and whether it
runs before calibration (it changes what calibration would measure: `rotate`). To add a
pass: write its module (options dataclass deriving `qpass.schema.Checked`, and the function), add a row below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..schema import RecipeError
from . import mixed_precision, qsm, rotate, sale, smoothquant, trit_planes


@dataclass(frozen=True)
class PassInfo:
    name: str
    run: Callable  # run(ctx: PassContext, options) -> None
    options: type  # the pass's options dataclass
    needs_calibration: bool | Callable[[object], bool] = False  # or a function of the options
    statistics: Callable[[object], dict] | None = None  # options -> extra ChannelObserver statistics
    edits_weights: bool = False  # folds factors into the model's parameters (the torch.compile backend refuses it)
    runs_model: Callable[[object], bool] | None = None  # options -> runs the model on data (calibration text)
    before_calibration: bool = False  # runs once over the whole model before calibration (which then measures
    # what it made), block by block or not
    per_block: bool = True  # can plan one block's sites at a time (block-by-block calibration, qpass/sequential.py)

    def calibrates(self, options) -> bool:
        """Whether the pass, with these options, needs calibration data."""
        n = self.needs_calibration
        return bool(n(options)) if callable(n) else n


_PASSES = {p.name: p for p in (
    PassInfo("rotate", rotate.rotate, rotate.RotateOptions, edits_weights=True, before_calibration=True),
    PassInfo("trit_planes", trit_planes.trit_planes, trit_planes.TritPlaneOptions,
             needs_calibration=trit_planes.needs_calibration, statistics=trit_planes.statistics),
    PassInfo("smoothquant", smoothquant.smoothquant, smoothquant.SmoothQuantOptions, needs_calibration=True,
             edits_weights=True),
    PassInfo("qsm", qsm.qsm, qsm.QSMOptions, needs_calibration=True, statistics=qsm.statistics, edits_weights=True),
    PassInfo("sale", sale.sale, sale.SaleOptions, runs_model=sale.runs_model),
    PassInfo("mixed_precision", mixed_precision.mixed_precision, mixed_precision.MixedPrecisionOptions,
             needs_calibration=True, statistics=mixed_precision.statistics, runs_model=mixed_precision.runs_model,
             per_block=False),
)}


def get(name: str, path: str = "passes") -> PassInfo:
    if name not in _PASSES:
        raise RecipeError(f"{path}: unknown pass {name!r}; available: {', '.join(sorted(_PASSES))}")
    return _PASSES[name]


def available() -> dict[str, PassInfo]:
    return dict(_PASSES)


def run_passes(ctx, specs, before_calibration: bool) -> None:
    """Run, in recipe order, the passes of `specs` that run before calibration (True) or the others (False)."""
    ctx.pass_names = tuple(spec.name for spec in specs)
    for spec in specs:
        info = get(spec.name)
        if info.before_calibration == before_calibration:
            info.run(ctx, spec.options)
