"""Perplexity with the published protocol: non-overlapping windows of `seq_len` tokens, every token after the
first of its window scored once (or, with `stride`, overlapping windows scoring only their new tokens)."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    seq_len: int = 512,
    *,
    stride: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> float:
    """exp(mean negative log-likelihood) of `input_ids` ([N] or [1, N]) under `model`.

    stride=None: windows [0, L), [L, 2L), ... each scoring its tokens 1..L-1 (a trailing partial window of ≥ 2
    tokens is scored too). stride=S < L: windows start every S tokens; each scores only tokens not scored before.
    """
    ids = torch.as_tensor(input_ids).reshape(-1)
    if ids.numel() < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    if seq_len < 2:
        raise ValueError(f"seq_len must be ≥ 2, got {seq_len}")
    stride = seq_len if stride is None else stride
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len], got {stride}")
    windows = []  # (start, end, first scored position within the window)
    scored_until = 0
    for start in range(0, ids.numel() - 1, stride):
        end = min(start + seq_len, ids.numel())
        first = max(1, scored_until - start)
        if end - start >= 2 and first < end - start:
            windows.append((start, end, first))
        scored_until = end
        if end == ids.numel():
            break
    first_tensor = next(itertools.chain(model.parameters(), model.buffers()), None)  # qpass.load: buffers only
    device = first_tensor.device if first_tensor is not None else torch.device("cpu")
    nll, count = 0.0, 0
    bar = tqdm(total=len(windows), desc="perplexity", unit="window", disable=not progress)
    # Windows of equal length are batched together.
    i = 0
    while i < len(windows):
        group = [windows[i]]
        while len(group) < batch_size and i + len(group) < len(windows):
            nxt = windows[i + len(group)]
            if nxt[1] - nxt[0] != group[0][1] - group[0][0] or nxt[2] != group[0][2]:
                break
            group.append(nxt)
        batch = torch.stack([ids[s:e] for s, e, _ in group]).to(device)
        out = model(input_ids=batch, use_cache=False)
        logits = getattr(out, "logits", out).float()  # HF output, or the logits tensor of a qpass.load model
        first = group[0][2]
        pred = logits[:, first - 1 : -1]
        target = batch[:, first:]
        nll += float(F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="sum"))
        count += target.numel()
        bar.update(len(group))
        i += len(group)
    bar.close()
    return math.exp(nll / count)
