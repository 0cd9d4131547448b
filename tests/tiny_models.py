"""Tiny random-weight configs of every architecture family qpass supports (structure tests only)."""
from __future__ import annotations

import copy

import torch
import transformers as tf

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_COMMON),
    "qwen2": lambda: tf.Qwen2Config(**_COMMON),
    "qwen3": lambda: tf.Qwen3Config(**_COMMON, head_dim=16),
    "mistral": lambda: tf.MistralConfig(**_COMMON),
    "gemma2": lambda: tf.Gemma2Config(**_COMMON, head_dim=16),
    "gemma3": lambda: tf.Gemma3TextConfig(**_COMMON, head_dim=16),
    "gpt2": lambda: tf.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=256),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = copy.deepcopy(CONFIGS[arch]())  # from_config mutates configs: never share one
    return tf.AutoModelForCausalLM.from_config(cfg).eval()
