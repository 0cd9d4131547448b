"""The one table from recipe pass names to pass functions and their typed options."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..recipe import PassSpec, RecipeError, _build


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: Callable  # fn(ctx: PassContext, options) -> None
    options: type  # a dataclass of the pass's options
    needs_calibration: bool
    doc: str


_PASSES: dict[str, PassInfo] = {}


def register(name: str, options: type, needs_calibration: bool = False):
    def wrap(fn):
        _PASSES[name] = PassInfo(name, fn, options, needs_calibration, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return wrap


def get(name: str) -> PassInfo:
    if name not in _PASSES:
        raise RecipeError(f"passes: unknown pass {name!r}; available: {', '.join(sorted(_PASSES)) or 'none'}")
    return _PASSES[name]


def available() -> dict[str, PassInfo]:
    return dict(_PASSES)


def validate(spec: PassSpec, path: str):
    """The pass's typed options, built from the spec (errors name `passes[i].<option>`)."""
    if spec.name not in _PASSES:
        raise RecipeError(f"{path}.name: unknown pass {spec.name!r}; available: {', '.join(sorted(_PASSES)) or 'none'}")
    return _build(_PASSES[spec.name].options, spec.options, path)
