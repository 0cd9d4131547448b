"""`qpass.static_cache(model, max_cache_len)`: a transformers StaticCache whose K/V tensors exist before the first
forward, for CUDA graphs from a compiled forward (docs/lowering.md "CUDA graphs from generate").

A StaticCache allocates its tensors lazily, on the first `update`. When that happens inside a compiled forward
(the prompt's), the tensors are not marked as static addresses, so inductor's "reduce-overhead" treats them as
ordinary inputs and skips the CUDA graph of every step that updates them in place — the decode steps. Allocating
them here, eagerly, marks them static once (transformers' own generate does so only for chunked prefill).
"""
from __future__ import annotations

import torch


def static_cache(model: torch.nn.Module, max_cache_len: int, batch_size: int = 1):
    """An eagerly allocated `transformers.StaticCache` for `model` (its text config, dtype and device): pass it
    as `past_key_values=` to `generate` or to the forward."""
    import transformers as tf

    cfg = model.config.get_text_config(decoder=True)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    param = next(model.parameters())
    cache = tf.StaticCache(config=cfg, max_cache_len=max_cache_len)
    cache.early_initialization(batch_size, heads, head_dim, param.dtype, param.device)
    return cache
