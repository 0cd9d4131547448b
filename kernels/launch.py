"""`launch(kernel, grid, *args, **meta)`: `kernel[grid](*args, **meta)` with Triton's per-call binding skipped on
repeat calls; `bind(kernel, grid, args, meta)`: the same launch with everything but the tensors fixed once.

Triton's launcher binds and specializes every argument, builds a cache key and looks the compiled kernel up on each
call (≈ 10–25 µs of host time for our 15–20-argument kernels on an H200 host), which is most of a decode step's
per-op budget. The first call of a specialization goes through Triton as usual (compiling if needed) and keeps
the compiled kernel; later calls with the same key call its driver launcher directly.

The key holds everything Triton specializes on, conservatively: each tensor's dtype and its address modulo 16
(Triton specializes on 16-byte alignment), every other argument's exact value (ints are shapes, strides and
block counts here, floats softmax scales, so this costs no extra compiles), the constexpr / launch options, the
grid and the device. Triton launches on the current CUDA device, so a call whose tensors live on another GPU (a
model spread over several) runs under that GPU as the current device. Launch hooks (profilers) are passed on to the
driver launcher as Triton passes them.

A `BoundLaunch` (made by `bind`) fixes the grid, the scalar arguments and meta, so a call's key is only its
tensors' dtypes and alignments: an op's per-signature plan (kernels/checks.py `planned`) binds its launch once,
and `launch` keeps one binding per set of those. Direct launches pass the tensors' device addresses as plain ints,
which the driver launcher takes as they are: for a tensor it calls data_ptr() and has the driver validate the
address (cuPointerGetAttribute), per pointer and call.
"""
from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Sequence

import torch
from torch import Tensor
from triton import knobs
from triton.runtime.driver import driver
from triton.runtime.interpreter import InterpretedFunction

_COMPILED: dict = {}
_BINDINGS: dict = {}  # `launch`'s bindings, per kernel, grid, scalar arguments and meta
_COMPILED_MAX = 4096  # specializations kept; more (e.g. many prompt lengths) starts over
_DEVICE_STREAM = None  # (get_current_device, get_current_stream) of the active driver, see _driver
TENSOR = object()  # a tensor slot in `bind`'s argument template


def launcher_order(arg_names, npos: int, meta: dict):
    """The compiled launcher takes every parameter in declaration order: the first `npos` from the positional
    arguments, the rest by name from `meta` (None when one is left to its default: Triton's path then)."""
    rest = arg_names[npos:]
    if any(name not in meta for name in rest):
        return None
    return tuple(range(npos)) + tuple(rest)


def _driver():
    """The active Triton driver's (current device, current stream) getters, resolved once (`driver.active` is a
    lazy proxy: each attribute read through it is a Python call)."""
    global _DEVICE_STREAM
    if _DEVICE_STREAM is None:
        active = driver.active
        get_device = active.get_current_device
        if get_device is torch.cuda.current_device:  # a Python wrapper (lazy init, then this C call): CUDA is
            get_device = torch._C._cuda_getDevice  # initialized once a tensor lives there, before any launch
        _DEVICE_STREAM = (get_device, active.get_current_stream)
    return _DEVICE_STREAM


def _first_launch(key, kernel, grid, args, meta):
    """Triton's own launch (compiling if needed); keeps the compiled kernel under `key` for the direct path, with
    the kernel itself: id(kernel) is part of the key, and is not reused while the entry holds the kernel."""
    compiled = kernel[grid](*args, **meta)
    order = launcher_order(kernel.arg_names, len(args), meta)
    if order is not None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        g = tuple(grid) + (1,) * (3 - len(grid))
        _COMPILED[key] = (kernel, compiled, compiled.run, compiled.function, compiled.packed_metadata, order, g)


def _hooked(enter) -> bool:
    """Whether `enter` (the launch enter hook) is a profiler's: Triton >= 3.5 keeps an always-present HookChain, empty
    when none is installed, older ones None."""
    return enter is not None and bool(getattr(enter, "calls", True))


def _direct_launch(entry, values, stream, hooked: bool, enter, exit_) -> None:
    _, compiled, run, function, packed_metadata, _, g = entry
    # the launch metadata is the enter hook's argument: built only when a hook will read it
    metadata = compiled.launch_metadata(g, stream, *values) if hooked else None
    run(g[0], g[1], g[2], stream, function, packed_metadata, metadata, enter, exit_, *values)


def _other_device(args, device: int):
    """The CUDA index of the first tensor argument when it is not the current device, else None."""
    for a in args:
        if isinstance(a, Tensor):
            index = a.device.index
            return index if index is not None and index != device else None
    return None


def launch(kernel, grid: tuple, *args, **meta):
    """Launch the @triton.jit `kernel` on `grid` (a tuple of ints) like `kernel[grid](*args, **meta)`: through the
    binding of its grid, scalar arguments and meta (`BoundLaunch`), kept per such set."""
    if isinstance(kernel, InterpretedFunction):  # TRITON_INTERPRET=1: nothing compiled to keep
        kernel[grid](*args, **meta)
        return
    template = [TENSOR if isinstance(a, Tensor) else a for a in args]
    tensors = [a for a in args if isinstance(a, Tensor)]
    key = (id(kernel), grid, tuple(template), tuple(meta.items()), tuple([t.dtype for t in tensors]))
    bound = _BINDINGS.get(key)
    if bound is None:
        if len(_BINDINGS) >= _COMPILED_MAX:
            _BINDINGS.clear()
        bound = _BINDINGS[key] = BoundLaunch(kernel, grid, template, meta)
    bound(*tensors)


class BoundLaunch:
    """`launch(kernel, grid, *args, **meta)` with `args` a template: TENSOR marks the slots that each call fills,
    in order; every other argument, the grid and meta are fixed. Made once per op signature (`bind`), so the
    slots' dtypes are fixed too: the caller keeps them (a plan is per signature; `launch` binds per dtypes), and a
    call that is keyed (below) with others than the first call's is refused.

    A call whose tensors are all 16-byte aligned (the usual case) finds its compiled kernel in `aligned`, per
    device, without building a key; any other goes through `_COMPILED` under its alignments."""

    __slots__ = ("kernel", "grid", "npos", "meta", "values", "slots", "interpret", "key", "tail", "dtypes",
                 "aligned")

    def __init__(self, kernel, grid: tuple, args: Sequence, meta: dict):
        self.kernel, self.grid, self.npos, self.meta = kernel, tuple(grid), len(args), dict(meta)
        self.interpret = isinstance(kernel, InterpretedFunction)
        # equal bindings share their compiled entries (a binding made per call still takes the direct path)
        self.key = (id(kernel), self.grid, tuple(args), tuple(self.meta.items()))
        order = None if self.interpret else launcher_order(kernel.arg_names, len(args), meta)
        # the driver launcher's values: the positional arguments, then the non-constexpr named ones in order
        self.values = list(args) + [meta[name] for name in (order or ())[len(args):]]
        self.slots = tuple(i for i, a in enumerate(args) if a is TENSOR)
        # the usual template has its tensors first: a call's values are then its pointers + this tail
        self.tail = self.values[len(self.slots):] if self.slots == tuple(range(len(self.slots))) else None
        self.dtypes, self.aligned = None, {}

    def _filled(self, items) -> list:
        """The launch values with the tensor slots holding `items` (the tensors, or their addresses)."""
        if self.tail is not None:
            return list(items) + self.tail
        values = self.values.copy()
        for i, t in zip(self.slots, items):
            values[i] = t
        return values

    def __call__(self, *tensors: Tensor) -> None:
        if self.interpret:
            self.kernel[self.grid](*self._filled(tensors)[:self.npos], **self.meta)
            return
        current_device, current_stream = _DEVICE_STREAM or _driver()
        device = current_device()
        other = _other_device(tensors, device)
        if other is not None:
            with torch.cuda.device(other):
                return self(*tensors)
        # the driver launcher takes a pointer argument as a plain int as well: given the tensor, it calls its
        # data_ptr() and asks the driver to validate the address (cuPointerGetAttribute), per tensor and call
        pointers = [t.data_ptr() for t in tensors]
        entry = None if reduce(or_, pointers, 0) & 15 else self.aligned.get(device)
        if entry is None:
            entry = self._compiled(tensors, pointers, device)
            if entry is None:  # launched through Triton (its first call with these alignments)
                return
        runtime = knobs.runtime  # the hooks are read per launch: a profiler may install them at any time
        enter, exit_ = runtime.launch_enter_hook, runtime.launch_exit_hook
        hooked = _hooked(enter)  # a launch hook (profiler) reads the arguments as Triton passes them: the tensors
        _direct_launch(entry, self._filled(tensors if hooked else pointers), current_stream(device), hooked, enter,
                       exit_)

    def _compiled(self, tensors, pointers, device: int):
        """The compiled entry for these tensors' alignments on `device` (equal bindings share it); None after
        launching through Triton when there is none yet."""
        dtypes = tuple([t.dtype for t in tensors])
        if self.dtypes is None:
            self.dtypes = dtypes
        elif dtypes != self.dtypes:
            raise TypeError(f"a launch of {getattr(self.kernel, '__name__', self.kernel)} bound for tensors of "
                            f"{self.dtypes} was called with {dtypes}")
        alignments = tuple([p & 15 for p in pointers])
        key = (self.key, device, dtypes, alignments)
        entry = _COMPILED.get(key)
        if entry is None:
            _first_launch(key, self.kernel, self.grid, self._filled(tensors)[:self.npos], self.meta)
        elif not any(alignments):
            self.aligned[device] = entry
        return entry


def bind(kernel, grid: tuple, args: Sequence, meta: dict) -> BoundLaunch:
    """The launch of `kernel` on `grid` with `args` (TENSOR in each per-call slot) and `meta`; call it with the
    slots' tensors."""
    return BoundLaunch(kernel, grid, args, meta)


def output_plan(bound: BoundLaunch, out_shape: tuple, dtype: torch.dtype, device: torch.device, tensors):
    """An op's per-signature call around a bound launch: `call(*op_args) -> y`, y = a fresh [out_shape] tensor,
    launching `bound(*tensors(*op_args, y))` (`tensors` maps the op's arguments to the launch's tensor slots)."""
    def call(*op_args):
        y = torch.empty(out_shape, dtype=dtype, device=device)
        bound(*tensors(*op_args, y))
        return y
    return call
