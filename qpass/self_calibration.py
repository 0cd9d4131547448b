"""Calibration text sampled from the model itself: what a calibrating recipe reads when the user has no data.

With `calibration: {self_generated: true}` and no batches passed, `qpass.compile` samples `num_samples` sequences
of `seq_len` tokens from the model being quantized (before any pass changes it): each starts at the model's BOS
token (a seeded random token when it has none) and continues by sampling the full next-token distribution at
temperature 1, end-of-sequence tokens excluded so every sequence is text to its last token. Seeded: the same
model and recipe give the same batches. The data-free family of LLM-QAT's calibration (docs/calibration.md).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

SEED = 0
BATCH = 16  # sequences sampled together (one KV cache each)


def _end_tokens(config) -> list[int]:
    eos = getattr(config, "eos_token_id", None)
    return [int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]) if t is not None]


@torch.no_grad()
def sample_calibration(model: torch.nn.Module, num_samples: int, seq_len: int, *, progress: bool = True
                       ) -> list[torch.Tensor]:
    """`num_samples` token-id sequences [B ≤ BATCH, seq_len] sampled from `model` (an HF causal LM, through its
    own `generate`, so every cache layout transformers has works)."""
    from transformers import GenerationConfig

    config = model.config
    vocab = model.get_output_embeddings().weight.shape[0]
    device = next(model.parameters()).device
    bos = getattr(config, "bos_token_id", None)
    ends = [t for t in _end_tokens(config) if t < vocab]
    how = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=seq_len - 1,
                           min_new_tokens=seq_len - 1, suppress_tokens=ends or None,
                           pad_token_id=ends[0] if ends else 0)
    g = torch.Generator().manual_seed(SEED)
    batches = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SEED)  # generate samples from the global generator: seeded here, restored after
        for start in tqdm(range(0, num_samples, BATCH), desc="sampling calibration text", unit="batch",
                          disable=not progress, leave=False):
            n = min(BATCH, num_samples - start)
            first = (torch.full((n, 1), int(bos)) if bos is not None and bos < vocab
                     else torch.randint(0, vocab, (n, 1), generator=g))
            ids = model.generate(first.to(device), attention_mask=torch.ones_like(first, device=device),
                                 generation_config=how)
            batches.append(ids[:, :seq_len])
    return batches
