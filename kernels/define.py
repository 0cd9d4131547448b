"""`kernel_op`: how every qpass:: op is registered — `torch.library.custom_op`'s contract with less host time.

An op is declared like a custom op: a typed Python function (its schema is inferred the same way,
`torch.library.infer_schema`, no mutated arguments) plus a fake via `.register_fake`. The difference is the
eager path: `custom_op` wraps each call in Python autograd and output-aliasing checks (≈ 9 µs per call on an H200
host under `no_grad`, more than half of a decode GEMV's whole budget — benchmarks/launch_overhead.py); here the
implementation is registered straight to the CompositeExplicitAutograd key, so the dispatcher calls it directly.
The ops are inference kernels without gradients: an input that requires grad gets PyTorch's default autograd
fallback (backward through the op raises), as custom_op without `register_autograd` does. The implementations
return fresh tensors (no aliasing), which the tests check with `torch.library.opcheck`.

`.register_inductor_decomposition(fn)`: what inductor compiles instead of a call to the op's kernel, where the op
is cheap math that is better fused into its neighbours than launched on its own (the static activation
quantizer). `fn` may return NotImplemented to keep the kernel call for some arguments. Installed into inductor's
table by `install_inductor_decompositions()` when a graph is first handed to an inner compiler (qpass/inner.py):
importing inductor costs seconds, so `import qpass` does not.
"""
from __future__ import annotations

from typing import Callable

import torch

_LIBS: dict[str, torch.library.Library] = {}
_INDUCTOR_DECOMPOSITIONS: dict[str, Callable] = {}


def _library(namespace: str) -> torch.library.Library:
    if namespace not in _LIBS:
        _LIBS[namespace] = torch.library.Library(namespace, "FRAGMENT")
    return _LIBS[namespace]


class KernelOp:
    """A registered op: calling it calls the dispatcher (`torch.ops.<ns>.<name>`); `register_fake` as on custom_op."""

    def __init__(self, qualname: str, fn: Callable):
        namespace, name = qualname.split("::")
        lib = _library(namespace)
        lib.define(name + torch.library.infer_schema(fn, mutates_args=()))
        lib.impl(name, fn, "CompositeExplicitAutograd")
        self._qualname, self._lib = qualname, lib
        self._op = getattr(getattr(torch.ops, namespace), name)
        self.__name__, self.__doc__ = name, fn.__doc__

    def __call__(self, *args, **kwargs):
        return self._op(*args, **kwargs)

    def register_fake(self, fn: Callable) -> Callable:
        torch.library.register_fake(self._qualname, fn, lib=self._lib)
        return fn

    def register_inductor_decomposition(self, fn: Callable) -> Callable:
        _INDUCTOR_DECOMPOSITIONS[self._qualname] = fn
        return fn


def kernel_op(qualname: str) -> Callable[[Callable], KernelOp]:
    """Decorator: `@kernel_op("qpass::w4a16_linear")` on the op's typed implementation."""
    return lambda fn: KernelOp(qualname, fn)


def install_inductor_decompositions() -> None:
    """Put the ops' inductor decompositions into inductor's table (idempotent; it imports inductor)."""
    from torch._inductor import decomposition as inductor

    added = False
    for qualname, fn in _INDUCTOR_DECOMPOSITIONS.items():
        namespace, name = qualname.split("::")
        op = getattr(getattr(torch.ops, namespace), name).default
        if inductor.decompositions.get(op) is not fn:
            inductor.decompositions[op] = fn
            added = True
    cached = getattr(inductor, "fast_random_decomps", None)  # inductor caches a copy of the table
    if added and hasattr(cached, "cache_clear"):
        cached.cache_clear()
