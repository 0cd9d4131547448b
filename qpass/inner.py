"""Handing a rewritten graph to an inner compiler (inductor by default): the qpass backend always does, and
qpass.compile(..., compiler="inductor") does for its calibrated graphs. The qpass kernels and fake-quant ops
are inference ops with no autograd formula, so a graph captured with grad mode on is compiled and run as an
inference graph."""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_inner(gm: fx.GraphModule, example_inputs, inner: str = "inductor", mode: str | None = None) -> Callable:
    """`gm` compiled by the Dynamo backend named `inner` ("inductor", "aot_eager", "eager"); `mode`: inductor's
    mode (its config patches)."""
    from torch._dynamo.backends.registry import lookup_backend

    from .kernels.define import install_inductor_decompositions

    install_inductor_decompositions()  # e.g. the static activation quantizer fused into its producer
    compiler = lookup_backend(inner)
    kwargs = {}
    if inner == "inductor" and mode not in (None, "default"):
        from torch._inductor import list_mode_options

        kwargs["config_patches"] = list_mode_options(mode)
    if not torch.is_grad_enabled():
        return compiler(gm, example_inputs, **kwargs)
    # Captured with grad mode on (the model called without torch.no_grad()): AOT autograd cannot trace a backward
    # through the qpass ops, so compile the inference graph and run it without grad — the same numbers, without
    # autograd history. Dynamo guards on grad mode, so this graph only serves grad-mode calls.
    erase_grad_mode_changes(gm)
    with torch.no_grad():
        compiled = compiler(gm, example_inputs, **kwargs)
    return without_grad(compiled)


def erase_grad_mode_changes(gm: fx.GraphModule) -> None:
    """Dynamo records a `with torch.no_grad()` block of the model's forward as _set_grad_enabled(False) ...
    _set_grad_enabled(True): that restore would turn grad mode back on in the middle of an inference graph."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch._C._set_grad_enabled:
            gm.graph.erase_node(node)
    gm.recompile()


def without_grad(fn: Callable) -> Callable:
    def run(*args):
        with torch.no_grad():
            return fn(*args)

    return run
