"""The float weights of quantized sites, released once a model is quantized.

Every graph of a quantized model reads a quantized site's weight from the plan (its integer codes, in the
fake-quant graph) or from their packed forms (the kernels), never from the float parameter. The parameter itself
must stay (Dynamo passes it to the graphs and guards it: the same object, shape, strides, dtype and device), its
memory need not: each is re-pointed at one shared buffer per (dtype, device), as large as the largest of them and
filled with NaN, so a read that should not happen shows in the output instead of passing silently. A Llama-3-8B
keeps ≈ 16 GB of bf16 weights next to its 4-bit ones otherwise.
"""
from __future__ import annotations

import itertools

import torch

from .plan import Plan


@torch.no_grad()
def release_float_weights(model: torch.nn.Module, plan: Plan) -> tuple[int, int]:
    """Point the float weights of the plan's weight-quantized sites (linears and 3-D expert tensors) at shared NaN
    buffers; returns (weights released, bytes freed). A weight that shares memory with a tensor that stays (an
    embedding tied to a quantized lm_head) is kept."""
    candidates = {}
    for sp in [*plan.values(), *plan.experts.values()]:  # linear sites, and 3-D expert tensors
        if sp.weight is None:
            continue
        try:
            p = model.get_parameter(sp.weight_fqn)
        except AttributeError:
            continue
        if p.is_floating_point() and p.numel() > 0:
            candidates[sp.weight_fqn] = p
    tensors = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    kept = {t.untyped_storage().data_ptr() for name, t in tensors if name not in candidates}
    released = {name: p for name, p in candidates.items() if p.untyped_storage().data_ptr() not in kept}
    shared: dict[tuple, torch.Tensor] = {}
    for p in released.values():
        key = (p.dtype, p.device)
        need = _span(p)
        if key not in shared or shared[key].numel() < need:
            shared[key] = torch.full((need,), float("nan"), dtype=p.dtype, device=p.device)
    freed = sum({p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in released.values()}.values())
    for p in released.values():
        p.data = shared[(p.dtype, p.device)].as_strided(p.shape, p.stride())
    return len(released), freed


def _span(t: torch.Tensor) -> int:
    """Elements a buffer needs to hold a tensor of t's shape and strides from offset 0."""
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
