"""Text for calibration and evaluation, with no download: the public-domain novels shipped with qpass (Jane Austen's,
from Debian's r-cran-janeaustenr; convention: calibrate on *Emma*, evaluate on *Pride and Prejudice*), or the
user's own text file (plain text, or JSON Lines with the text in one field; either may be gzipped)."""
from __future__ import annotations

import gzip
import json
import os
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
    return tokens(tokenizer, austen_text(novel), max_tokens)


def read_text_file(path: str | os.PathLike, field: str | None = None) -> str:
    """The text of a user's calibration file: plain text (`.txt`, or any name), or JSON Lines (`.jsonl`,
    `.json`: one object per line, its `field` — default "text" — holding a string; the records' texts are joined
    by blank lines). A `.gz` suffix is read through gzip. Errors name the file, and the line of a bad record."""
    path = os.fspath(path)
    name = path[:-3] if path.endswith(".gz") else path
    jsonl = name.endswith((".jsonl", ".json"))
    if field is not None and not jsonl:
        raise ValueError(f"{path}: a field ({field!r}) only applies to a JSON Lines file (.jsonl)")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if not jsonl:
                text = f.read()
            else:
                text = "\n\n".join(_jsonl_texts(f, path, field or "text"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: not readable as UTF-8 text ({e})") from None
    if not text.strip():
        raise ValueError(f"{path}: holds no text")
    return text


def _jsonl_texts(lines, path: str, field: str):
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict) or field not in record:
            raise ValueError(f"{path}:{i}: no {field!r} field (name the field that holds the text)")
        if not isinstance(record[field], str):
            raise ValueError(f"{path}:{i}: field {field!r} holds {type(record[field]).__name__}, not text")
        yield record[field]


def wikitext2_text(path: str | os.PathLike) -> str:
    """The WikiText-2 test split as perplexity papers score it (GPTQ's protocol): the Hugging Face rows of
    `wikitext-2-raw-v1` (`wiki.test.raw`: one row per line, an empty row written as " \\n") joined by blank lines."""
    raw = read_text_file(path)
    rows = [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    return "\n\n".join(rows)


def tokens(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids [N] of `text` (no special tokens), the first `max_tokens` of them (None or 0: all)."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    return ids[:max_tokens] if max_tokens else ids


def token_batches(tokenizer, text: str, num_samples: int, seq_len: int, batch_size: int = 4, what: str = "the text"):
    """`num_samples` consecutive, non-overlapping sequences of `seq_len` tokens of `text`, as [B, seq_len]
    batches; ValueError naming `what` when the text is too short."""
    ids = tokens(tokenizer, text, num_samples * seq_len)
    n = ids.numel() // seq_len
    if n < num_samples:
        raise ValueError(f"{what} has only {n} sequences of {seq_len} tokens ({ids.numel()} tokens); "
                         f"asked for {num_samples}")
    return list(ids[: num_samples * seq_len].reshape(num_samples, seq_len).split(batch_size))


def calibration_batches(tokenizer, novel: str = "emma", num_samples: int = 32, seq_len: int = 512, batch_size: int = 4):
    """`num_samples` consecutive, non-overlapping sequences of `seq_len` tokens of a shipped novel, as
    [B, seq_len] batches."""
    return token_batches(tokenizer, austen_text(novel), num_samples, seq_len, batch_size, novel)
