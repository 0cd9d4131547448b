"""SALE custom ops (qpass::sale_*): Triton on CUDA (sale/dispatch.py), the pure-torch reference (sale/reference.py)
elsewhere.

q [B, H, S, D], k / v [B, Hkv, S, D] (SDPA layout, GQA when Hkv < H), tau [H] fp32 per-head thresholds.
`sale_attention` runs dense causal attention when S ≤ min_seq_len (short prefills stay dense, as in the paper).
`attn_mask` (optional, what HF passes under tracing): SALE when it is the bool causal mask, checked at run time
inside the op; any other mask (a one-token decode step's, padding) runs dense attention with it. Dense = the
paths of `qpass::attention` (kernels/attention/dense.py).
`group` (default True): one block map per KV group, the union of its query heads' selections (docs/sale.md).
`pool` (default 1): > 1 estimates from mean-pooled query rows (`pool` rows each; a power of two dividing block_m).
Kernels on CUDA: the defaults of sale/dispatch.py (select v1 / v2 by pool, docs/sale.md "Kernel v2").
Both ops check their arguments (kernels/checks.py) in the implementation and the fake: shapes of q / k / v and
τ, dtypes, devices, block sizes, pool, min_seq_len and the mask's broadcast shape.
`model_window` (optional, default None = full causal): the model's sliding window W (key j seen by query i iff
i - W < j <= i, HF's convention); SALE then selects and attends inside it only (sale/reference.py).  A given
`attn_mask` must then be that window's mask (checked per call like the causal one), else dense attention with it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import checks as C
from ..attention.dense import causal_mask, dense, is_causal_mask, remembered_mask_check
from . import reference as R

MIN_SEQ_LEN = 1024


def _check_window(op: str, model_window: Optional[int]) -> None:
    torch._check_value(model_window is None or (isinstance(model_window, int) and model_window >= 1),
                       lambda: f"{op}: model_window must be None (full causal) or an int >= 1, got {model_window!r}")


def is_window_mask(mask: Tensor, S: int, model_window: Optional[int]) -> bool:
    """`mask` [..., S, S] is the bool causal mask limited to the model window (i - W < j <= i) in every batch /
    head; with model_window None, the plain causal mask."""
    if model_window is None or model_window >= S:
        return is_causal_mask(mask, S)
    if mask.dtype != torch.bool or mask.dim() < 2 or tuple(mask.shape[-2:]) != (S, S):
        return False
    return remembered_mask_check(mask, f"window {model_window}",
                                 lambda: bool((mask == causal_mask(S, model_window, mask.device)).all()))


def _scale(q: Tensor, scale: Optional[float]) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


@torch.library.custom_op("qpass::sale_select", mutates_args=())
def sale_select(q: Tensor, k: Tensor, tau: Tensor, scale: Optional[float], block_m: int, block_n: int,
                sink: int, window: int, group: bool = True, pool: int = 1,
                model_window: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """(kv_idx [B, H, nQB, nKB] int32: kept key blocks of each query block in ascending order, first kv_cnt
    valid; kv_cnt [B, H, nQB] int32; mask [B, H, nQB, nKB] int8)."""
    C.check_sale_select(q, k, tau, scale, block_m, block_n, sink, window, group, pool)
    _check_window("qpass::sale_select", model_window)
    s = _scale(q, scale)
    if q.is_cuda:
        from .dispatch import sale_select_triton  # imports triton: only on CUDA
        return sale_select_triton(q, k, tau, s, block_m, block_n, sink, window, group=group, pool=pool,
                                  model_window=model_window)
    mask = R.sale_select_ref(q, k, tau.cpu(), s, block_m, block_n, sink, window, group=group, pool=pool,
                             model_window=model_window)
    return (*R.mask_to_index(mask), mask.to(torch.int8))


@sale_select.register_fake
def _(q, k, tau, scale, block_m, block_n, sink, window, group=True, pool=1, model_window=None):
    C.check_sale_select(q, k, tau, scale, block_m, block_n, sink, window, group, pool)
    _check_window("qpass::sale_select", model_window)
    B, H, S, _ = q.shape
    nqb, nkb = -(-S // block_m), -(-S // block_n)
    return (q.new_empty(B, H, nqb, nkb, dtype=torch.int32), q.new_empty(B, H, nqb, dtype=torch.int32),
            q.new_empty(B, H, nqb, nkb, dtype=torch.int8))


def _dense(q, k, v, mask, is_causal, scale):
    """What SALE does not take runs the dense op's paths (kernels/attention/dense.py: the decode kernel for one
    query row on CUDA, flash attention for causal prefills, SDPA otherwise)."""
    return dense(q, k, v, mask, is_causal, scale, k.shape[1] != q.shape[1]).contiguous()  # the fake's layout


@torch.library.custom_op("qpass::sale_attention", mutates_args=())
def sale_attention(q: Tensor, k: Tensor, v: Tensor, tau: Tensor, scale: Optional[float], block_m: int,
                   block_n: int, sink: int, window: int, min_seq_len: int, group: bool = True,
                   pool: int = 1, attn_mask: Optional[Tensor] = None,
                   model_window: Optional[int] = None) -> Tensor:
    """Causal attention (inside `model_window` when given) over the blocks SALE keeps (estimate + select +
    block-sparse flash attention)."""
    C.check_sale_attention(q, k, v, tau, scale, block_m, block_n, sink, window, min_seq_len, group, pool, attn_mask)
    _check_window("qpass::sale_attention", model_window)
    s = _scale(q, scale)
    S = q.shape[2]
    win = model_window if model_window is not None and model_window < S else None  # W >= S: plain causal
    if attn_mask is not None and not is_window_mask(attn_mask, S, win):  # decode steps, padding masks
        return _dense(q, k, v, attn_mask, False, s)
    if S <= min_seq_len:  # short prefill: dense (with the window's mask when the window limits attention)
        if win is None:
            return _dense(q, k, v, None, True, s)
        return _dense(q, k, v, causal_mask(S, win, q.device)[None, None], False, s)
    if q.is_cuda:
        from .dispatch import sale_attention_triton
        return sale_attention_triton(q, k, v, tau, s, block_m, block_n, sink, window, group=group, pool=pool,
                                     model_window=win)
    return R.sale_attention_full_ref(q, k, v, tau.cpu(), s, block_m, block_n, sink, window, group=group, pool=pool,
                                     model_window=win)


@sale_attention.register_fake
def _(q, k, v, tau, scale, block_m, block_n, sink, window, min_seq_len, group=True, pool=1, attn_mask=None,
      model_window=None):
    C.check_sale_attention(q, k, v, tau, scale, block_m, block_n, sink, window, min_seq_len, group, pool, attn_mask)
    _check_window("qpass::sale_attention", model_window)
    return q.new_empty(*q.shape[:-1], v.shape[-1])
