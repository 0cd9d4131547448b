"""`launch(kernel, grid, *args, **meta)`: `kernel[grid](*args, **meta)` with Triton's per-call binding skipped on
repeat calls.

Triton's launcher binds and specializes every argument, builds a cache key and looks the compiled kernel up on each
call (≈ 10–25 µs of host time for our 15–20-argument kernels on an H200 host), which is most of a decode step's
per-op budget. The first call of a specialization goes through Triton as usual (compiling if needed) and keeps
the compiled kernel; later calls with the same key call its driver launcher directly.

The key holds everything Triton specializes on, conservatively: each tensor's dtype and its address modulo 16
(Triton specializes on 16-byte alignment), every other argument's exact value (ints are shapes, strides and
block counts here, floats softmax scales, so this costs no extra compiles), the constexpr / launch options, the
grid and the device. Triton launches on the current CUDA device, so a call whose tensors live on another GPU (a
model spread over several) runs under that GPU as the current device. Calls with launch hooks installed
(profilers) always go through Triton.
"""
from __future__ import annotations

import torch
from torch import Tensor
from triton import knobs
from triton.runtime.driver import driver
from triton.runtime.interpreter import InterpretedFunction

_COMPILED: dict = {}
_COMPILED_MAX = 4096  # specializations kept; more (e.g. many prompt lengths) starts over


def launcher_order(arg_names, npos: int, meta: dict):
    """The compiled launcher takes every parameter in declaration order: the first `npos` from the positional
    arguments, the rest by name from `meta` (None when one is left to its default: Triton's path then)."""
    rest = arg_names[npos:]
    if any(name not in meta for name in rest):
        return None
    return tuple(range(npos)) + tuple(rest)


def launch(kernel, grid: tuple, *args, **meta):
    """Launch the @triton.jit `kernel` on `grid` (a tuple of ints) like `kernel[grid](*args, **meta)`."""
    if isinstance(kernel, InterpretedFunction):  # TRITON_INTERPRET=1: nothing compiled to keep
        kernel[grid](*args, **meta)
        return
    device = driver.active.get_current_device()
    for a in args:
        if isinstance(a, Tensor):
            if a.device.index is not None and a.device.index != device:
                with torch.cuda.device(a.device.index):
                    return launch(kernel, grid, *args, **meta)
            break
    key = (kernel, grid, device, tuple([(a.dtype, a.data_ptr() & 15) if isinstance(a, Tensor) else a for a in args]),
           tuple(meta.items()))
    entry = _COMPILED.get(key)
    if entry is None:
        compiled = kernel[grid](*args, **meta)
        order = launcher_order(kernel.arg_names, len(args), meta)
        if order is not None:
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[key] = (compiled, order)
        return
    compiled, order = entry
    values = [args[i] if i.__class__ is int else meta[i] for i in order]
    stream = driver.active.get_current_stream(device)
    g = grid + (1,) * (3 - len(grid))
    hooks = knobs.runtime  # passed on as Triton passes them (profilers install launch hooks)
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata,
                 compiled.launch_metadata(g, stream, *values), hooks.launch_enter_hook, hooks.launch_exit_hook,
                 *values)
