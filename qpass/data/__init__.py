"""Public-domain text shipped with qpass (Jane Austen's novels, from Debian's r-cran-janeaustenr) for calibration and
evaluation without any download. Convention: calibrate on *Emma*, evaluate on *Pride and Prejudice*."""
from __future__ import annotations

import gzip
import re
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NOVELS = ("emma", "prideprejudice")


def austen_text(novel: str) -> str:
    """The novel as paragraphs: hard-wrapped lines joined with spaces, paragraphs separated by a blank line."""
    if novel not in NOVELS:
        raise ValueError(f"unknown novel {novel!r}; shipped: {', '.join(NOVELS)}")
    raw = gzip.decompress(resources.files(__name__).joinpath(f"{novel}.txt.gz").read_bytes()).decode("utf-8")
    return join_paragraphs(raw)


def join_paragraphs(raw: str) -> str:
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", raw)]
    return "\n\n".join(p for p in paragraphs if p)


def austen_tokens(tokenizer, novel: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids [N] of the novel (no special tokens), truncated to `max_tokens`."""
    ids = tokenizer(austen_text(novel), add_special_tokens=False, return_tensors="pt").input_ids[0]
    return ids if max_tokens is None else ids[:max_tokens]


def calibration_batches(tokenizer, novel: str = "emma", num_samples: int = 32, seq_len: int = 512, batch_size: int = 4):
    """`num_samples` consecutive, non-overlapping sequences of `seq_len` tokens, as [B, seq_len] batches."""
    ids = austen_tokens(tokenizer, novel, num_samples * seq_len)
    n = ids.numel() // seq_len
    if n < num_samples:
        raise ValueError(f"{novel} has only {n} sequences of {seq_len} tokens; asked for {num_samples}")
    seqs = ids[: n * seq_len].reshape(n, seq_len)[:num_samples]
    return list(seqs.split(batch_size))
