"""The dense attention paths, shared by qpass::attention (attention/ops.py) and the SALE ops' dense fallback
(sale/ops.py): which path a call takes on CUDA (`choose_path`) and running it (`run_path`).

Semantics = F.scaled_dot_product_attention(q, k, v, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=...),
q [B, H, S, D], k / v [B, Hkv, L, D]. Paths (CUDA only; elsewhere SDPA itself, the reference):
  * "decode": S == 1, `decode.supported(...)`, at most DECODE_MAX_KEYS keys, and a mask or a CUDA graph being
    captured: the Triton split-K flash-decoding kernel (HF's decode step over a static cache with a materialized
    bool mask otherwise runs SDPA's slow masked kernel). Without a mask and outside capture, SDPA's flash kernel
    is one C++ call (≈ 33 µs of host time per call on an H200 host against ≈ 200 µs for the Triton path with a
    growing cache, benchmarks/launch_overhead.py), and an uncaptured decode step is host-bound; beyond
    DECODE_MAX_KEYS keys SDPA is faster on the GPU too (docs/attention.md: 3–7 % at 32K keys on the H100).
  * "causal": S > 1, the mask is the bool causal mask with S == L, outside CUDA-graph capture: SDPA with
    is_causal=True and no mask, so flash attention runs. The check reads the mask (a device sync); a model passes
    one mask to all its layers, so the answer is remembered for that mask until it changes (`is_causal_mask`):
    one sync per forward, not one per layer.
  * "sdpa": anything else, SDPA as given (grouped K/V repeated to the query heads when a mask is given too).
"""
from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def is_causal_mask(mask: Tensor, S: int) -> bool:
    """`mask` [..., S, S] is the bool lower-triangular causal mask (every batch / head)."""
    if mask.dtype != torch.bool or mask.dim() < 2 or tuple(mask.shape[-2:]) != (S, S):
        return False
    return remembered_mask_check(mask, "causal", lambda: bool((mask == causal_mask(S, None, mask.device)).all()))


def causal_mask(S: int, window: Optional[int], device) -> Tensor:
    """The bool causal mask [S, S] (query i attends to keys j <= i), within `window` keys (i - window < j) when
    given."""
    i = torch.arange(S, device=device)
    want = i[None] <= i[:, None]
    return want if window is None else want & (i[:, None] - i[None] < window)


def remembered_mask_check(mask: Tensor, question: str, read: Callable[[], bool]) -> bool:
    """`read()` (a check of the mask's values: a device sync), remembered per mask and question until the mask
    changes. Inference-mode tensors keep no version counter: they are read every call."""
    if mask.is_inference():
        return read()
    key = (mask._version, mask.storage_offset(), tuple(mask.shape), mask.stride(), question)
    storage = mask.untyped_storage()
    for ref, seen, answer in _MASKS[0]:
        if ref() is storage and seen == key:
            return answer
    answer = read()
    # one assignment: a concurrent reader sees the old or the new tuple, never a mix
    _MASKS[0] = ((weakref.ref(storage), key, answer),) + _MASKS[0][:_MASKS_KEPT - 1]
    return answer


# The last masks checked: (weak reference to the storage, (version counter, view geometry, question), answer).
# Keyed on the storage, not the tensor object: inductor hands each extern call a fresh tensor over the one mask
# buffer (`reinterpret_tensor`, no `_base`), so a tensor key missed at every layer and synced the device once per
# layer of a compiled prefill. The same storage (alive, so its memory was not reused) at the same version holds the
# same values: every in-place write through the tensor or a view of it bumps the counter. A few are kept: models
# alternate a full and a sliding-window mask by layer (Gemma 2/3, Mistral). The references are weak so the memo
# never keeps a mask alive.
_MASKS: list = [()]
_MASKS_KEPT = 4


def _capturing(q: Tensor) -> bool:
    return q.is_cuda and torch.cuda.is_current_stream_capturing()


DECODE_MAX_KEYS = 16384


def choose_path(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
                enable_gqa: bool) -> str:
    """'decode', 'causal' or 'sdpa' for tensors on a CUDA device (see the module docstring)."""
    return _path(_decode_fits(q, k, v, attn_mask, is_causal, enable_gqa),
                 _causal_candidate(q, k, attn_mask, is_causal), q, attn_mask)


def _decode_fits(q, k, v, attn_mask, is_causal: bool, enable_gqa: bool) -> bool:
    """The metadata half of the decode path's condition."""
    from .decode import supported  # imports triton: only on CUDA
    return q.shape[-2] == 1 and k.shape[-2] <= DECODE_MAX_KEYS and supported(q, k, v, attn_mask, is_causal,
                                                                              enable_gqa)


def _causal_candidate(q, k, attn_mask, is_causal: bool) -> bool:
    """The metadata half of the causal path's condition."""
    S = q.shape[-2]
    return S > 1 and attn_mask is not None and not is_causal and k.shape[-2] == S


def _path(decode_fits: bool, causal_candidate: bool, q: Tensor, attn_mask: Optional[Tensor]) -> str:
    """The path, from the metadata halves and what only a call knows: CUDA-graph capture, the mask's values."""
    if decode_fits and (attn_mask is not None or _capturing(q)):
        return "decode"
    if causal_candidate and not _capturing(q) and is_causal_mask(attn_mask, q.shape[-2]):
        return "causal"
    return "sdpa"


def plan(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool, scale: Optional[float],
         enable_gqa: bool):
    """`dense` for checked arguments with this metadata, as a call taking the same arguments and returning
    qpass::attention's layout (`token_major`; per-signature plan, kernels/checks.py `planned`): the metadata halves
    of the path choice and the output strides decided once, the decode kernel's launches bound once
    (`decode.decode_plan`); capture and the mask's values per call."""
    want = token_major_strides((*q.shape[:-1], v.shape[-1]))
    if not q.is_cuda:
        return lambda *args: token_major(dense(*args), want)
    decode_fits = _decode_fits(q, k, v, attn_mask, is_causal, enable_gqa)
    causal_candidate = _causal_candidate(q, k, attn_mask, is_causal)
    decode = []  # the decode kernel's plan, made by the first call that takes it (a growing cache's signature
    # changes every step, and without a mask only CUDA-graph capture takes it)

    def call(q, k, v, attn_mask, is_causal, scale, enable_gqa):
        path = _path(decode_fits, causal_candidate, q, attn_mask)
        if path == "decode":  # is_causal here only with L == 1: no-op
            if not decode:
                from .decode import decode_plan  # imports triton: only on CUDA
                decode.append(decode_plan(q, k, v, attn_mask, scale))
            out = decode[0](q, k, v, attn_mask)
        else:
            out = run_path(path, q, k, v, attn_mask, is_causal, scale, enable_gqa)
        return out if out.stride() == want else token_major(out, want)
    return call


def run_path(path: str, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool,
             scale: Optional[float], enable_gqa: bool) -> Tensor:
    """The path's output in the layout it comes in (flash attention writes [B, S, H, D] memory)."""
    if path == "decode":
        from .decode import decode_attention_triton
        return decode_attention_triton(q, k, v, attn_mask, scale)  # is_causal here only with L == 1: no-op
    if path == "causal":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa)
    if enable_gqa and attn_mask is not None and k.shape[-3] != q.shape[-3]:
        # PyTorch's fused CUDA kernels take a mask or GQA, not both (it would run the math backend: 7x slower
        # for a 512-token prompt into a Llama-3-8B static cache): repeat K/V to the query heads here instead
        g = q.shape[-3] // k.shape[-3]
        k, v, enable_gqa = k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=enable_gqa)


def token_major(out: Tensor, want: Optional[tuple[int, ...]] = None) -> Tensor:
    """`out` [..., H, S, D] with [..., S, H, D] memory, strides exactly those of
    `empty(..., S, H, D).transpose(-3, -2)` (the op's fake): what flash attention writes, and what the model's
    `transpose(1, 2).contiguous()` after attention then reads as contiguous (no copy). Other layouts are copied.
    `want`: `token_major_strides(out.shape)` when the caller has it (a plan computes it once per signature)."""
    want = want or token_major_strides(out.shape)
    if out.stride() == want:
        return out
    t = out.transpose(-3, -2)
    return out.as_strided(out.shape, want) if t.is_contiguous() else t.contiguous().transpose(-3, -2)


def token_major_strides(shape) -> tuple[int, ...]:
    """The strides of [..., H, S, D] stored as a contiguous [..., S, H, D]."""
    *lead, heads, rows, dim = (max(n, 1) for n in shape)
    strides, step = [], rows * heads * dim
    for n in reversed(lead):
        strides.append(step)
        step *= n
    return (*reversed(strides), dim, heads * dim, 1)


def dense(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], is_causal: bool, scale: Optional[float],
          enable_gqa: bool) -> Tensor:
    """SDPA(q, k, v, attn_mask, 0.0, is_causal, scale, enable_gqa) by the path `choose_path` picks (SDPA off CUDA)."""
    path = choose_path(q, k, v, attn_mask, is_causal, enable_gqa) if q.is_cuda else "sdpa"
    return run_path(path, q, k, v, attn_mask, is_causal, scale, enable_gqa)
