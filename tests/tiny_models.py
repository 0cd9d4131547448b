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
    # fused qkv_proj and gate_up_proj linears; its default eos and pad ids (32000) lie outside the tiny vocab
    "phi3": lambda: tf.Phi3Config(**_COMMON, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    # LayerNorm with bias, fc1/fc2 MLP, learned positions; no GQA
    "opt": lambda: tf.OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=96, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=256, pad_token_id=1),
    # mixture of experts: 4 experts, top-2
    "mixtral": lambda: tf.MixtralConfig(**_COMMON, num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": lambda: tf.Qwen3MoeConfig(**_COMMON, head_dim=16, moe_intermediate_size=32, num_experts=4,
                                           num_experts_per_tok=2),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = copy.deepcopy(CONFIGS[arch]())  # from_config mutates configs: never share one
    return tf.AutoModelForCausalLM.from_config(cfg).eval()
