"""Zero-shot multiple-choice accuracy (PIQA, HellaSwag) with lm-evaluation-harness's protocol, natively (lm-eval is
not needed): per example, the log-likelihood of each choice's continuation given the context; `acc` = the choice
with the largest summed log-probability, `acc_norm` = the largest log-probability divided by the choice's length
in characters (lm-eval's `acc_norm`). See docs/cli.md, "Zero-shot accuracy", for how each step maps to lm-eval.

Data are local files (qpass never downloads): `<data>/piqa/{valid.jsonl, valid-labels.lst}` (the official PIQA
dev set) and `<data>/hellaswag/hellaswag_val_full.txt.bz2` (HellaSwag validation in llama.cpp's 6-lines-per-item
text format), `<data>` being `data_dir=`, else `$QPASS_DATA`, else `../shared/data` beside a source checkout.
"""
from __future__ import annotations

import bz2
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


@dataclass
class Example:
    context: str
    choices: list[str]  # lm-eval's doc_to_choice strings (no leading delimiter)
    gold: int


def default_data_dir() -> Path:
    env = os.environ.get("QPASS_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _piqa(root: Path) -> list[Example]:
    """lm-eval's piqa.yaml: doc_to_text "Question: {{goal}}\\nAnswer:", choices [sol1, sol2], label from the .lst."""
    items = [json.loads(line) for line in (root / "piqa" / "valid.jsonl").read_text().splitlines() if line.strip()]
    labels = [int(x) for x in (root / "piqa" / "valid-labels.lst").read_text().split()]
    if len(items) != len(labels):
        raise ValueError(f"piqa: {len(items)} items but {len(labels)} labels in {root / 'piqa'}")
    return [Example(f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]], y) for d, y in zip(items, labels)]


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag `preprocess` (utils.py): strip, " [title]" -> ". ", drop "[...]" tags, "  " -> " "."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _capitalize_tail(ctx: str) -> str:
    """lm-eval builds the context as ctx_a + " " + ctx_b.capitalize(); the llama.cpp file joins ctx_a and ctx_b
    as they are. ctx_b is the unfinished last sentence: when the text after the last sentence end starts in lower
    case, it is ctx_b, and gets the same str.capitalize()."""
    m = re.search(r"^(.*[.!?]\s+)([a-z].*)$", ctx, flags=re.S)
    return ctx if m is None else m.group(1) + m.group(2).capitalize()


def _hellaswag(root: Path) -> list[Example]:
    """lm-eval's hellaswag.yaml + utils.process_docs: query = preprocess(activity_label + ": " + ctx), choices =
    preprocess(each ending), gold = label. Read from the llama.cpp text file: per item "activity_label: ctx",
    the gold label, then the 4 endings."""
    path = root / "hellaswag" / "hellaswag_val_full.txt.bz2"
    lines = bz2.decompress(path.read_bytes()).decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"hellaswag: {path} has {len(lines)} lines, not 6 per item")
    out = []
    for i in range(0, len(lines), 6):
        label, _, ctx = lines[i].partition(": ")
        out.append(Example(hellaswag_preprocess(f"{label}: {_capitalize_tail(ctx)}"),
                           [hellaswag_preprocess(e) for e in lines[i + 2:i + 6]], int(lines[i + 1])))
    return out


TASKS = {"piqa": _piqa, "hellaswag": _hellaswag}
_FILES = {"piqa": ("piqa/valid.jsonl", "piqa/valid-labels.lst"), "hellaswag": ("hellaswag/hellaswag_val_full.txt.bz2",)}


def check_tasks(names: list[str], data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder, after checking every task name is known and its files are there (ValueError /
    FileNotFoundError otherwise, listing the known tasks or the missing file)."""
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task {', '.join(map(repr, unknown)) or '(none given)'}; known tasks: {', '.join(TASKS)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    for n in names:
        for f in _FILES[n]:
            if not (root / f).is_file():
                raise FileNotFoundError(f"task {n}: {root / f} not found (give the data folder with --task-data DIR "
                                        "or $QPASS_DATA; qpass never downloads)")
    return root


def load_task(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[Example]:
    """The task's examples in file order (the first `limit` of them)."""
    root = check_tasks([name], data_dir)
    examples = TASKS[name](root)
    return examples[:limit] if limit else examples


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair: trailing spaces of the context move to the continuation; the continuation's
    tokens are those of tokenize(context + continuation) after tokenize(context)'s. No special tokens (lm-eval's
    default for causal LMs); an empty context becomes the EOS token."""
    n = len(context) - len(context.rstrip())
    if n:
        continuation, context = context[-n:] + continuation, context[:-n]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not ctx:
        return [tokenizer.eos_token_id], whole
    return ctx, whole[len(ctx):]


def _device(model) -> torch.device:
    t = next(iter(list(model.parameters()) + list(model.buffers())), None)
    return t.device if t is not None else torch.device("cpu")


@torch.no_grad()
def loglikelihoods(model, tokenizer, requests: list[tuple[str, str]], *, batch_size: int = 16,
                   max_length: int | None = None, progress: bool = True, desc: str = "scoring") -> list[float]:
    """Summed log-probability of each (context, continuation) under `model`, as lm-eval's loglikelihood: the
    input is (context + continuation)[-(max_length + 1):][:-1], the continuation's tokens scored. Requests run
    `batch_size` at a time, longest first, right-padded (causal attention: padding after a sequence cannot
    change its logits, so no attention mask is needed — qpass.load models take input_ids only)."""
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
    encoded = [_encode_pair(tokenizer, c, x) for c, x in requests]
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    device = _device(model)
    out = [0.0] * len(encoded)
    bar = tqdm(total=len(encoded), desc=desc, unit="choice", disable=not progress)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        seqs, conts = [], []
        for i in idx:
            ctx, cont = encoded[i]
            seqs.append((ctx + cont)[-(max_length + 1):][:-1])
            conts.append(len(cont))
        width = max(len(s) for s in seqs)
        batch = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            batch[r, :len(s)] = torch.tensor(s)
        res = model(input_ids=batch.to(device), use_cache=False)
        logits = getattr(res, "logits", res)  # HF output, or the logits tensor of a qpass.load model
        # only the continuations' positions are normalised, on the model's device, and one number per sequence
        # comes back (the whole [B, T, vocab] on the host made SmolLM2's HellaSwag take minutes on an H200)
        rows, positions, targets = [], [], []
        for r, i in enumerate(idx):
            n, k = len(seqs[r]), conts[r]
            rows += [r] * k
            positions += range(n - k, n)
            targets += encoded[i][1][-k:] if k else []
        picked = logits[torch.tensor(rows, device=device), torch.tensor(positions, device=device)].float()
        token_lp = torch.log_softmax(picked, dim=-1).gather(-1, torch.tensor(targets, device=device).unsqueeze(-1))
        per_row = torch.zeros(len(idx), device=device).index_add_(0, torch.tensor(rows, device=device),
                                                                  token_lp.squeeze(-1)).cpu()
        for r, i in enumerate(idx):
            out[i] = float(per_row[r])
        bar.update(len(idx))
    bar.close()
    return out


def _stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def score(examples: list[Example], lls: list[list[float]]) -> dict:
    """acc / acc_norm (and their standard errors, as lm-eval reports them) from per-choice log-likelihoods."""
    acc, norm = [], []
    for ex, ll in zip(examples, lls):
        best = max(range(len(ll)), key=lambda j: (ll[j], -j))  # ties: the first choice, like numpy's argmax
        scaled = [v / len(c) for v, c in zip(ll, ex.choices)]
        best_norm = max(range(len(ll)), key=lambda j: (scaled[j], -j))
        acc.append(float(best == ex.gold))
        norm.append(float(best_norm == ex.gold))
    n = len(examples)
    return {"acc": sum(acc) / n, "acc_stderr": _stderr(acc), "acc_norm": sum(norm) / n,
            "acc_norm_stderr": _stderr(norm), "examples": n}


def evaluate(model, tokenizer, tasks: list[str], *, limit: int | None = None, data_dir=None, batch_size: int = 16,
             progress: bool = True) -> dict:
    """{task: {acc, acc_stderr, acc_norm, acc_norm_stderr, examples}} for each task (zero-shot, lm-eval's protocol)."""
    root = check_tasks(tasks, data_dir)
    results = {}
    for name in tasks:
        examples = load_task(name, root, limit)
        requests = [(ex.context, " " + c) for ex in examples for c in ex.choices]  # target_delimiter " "
        flat = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, progress=progress, desc=name)
        lls, k = [], 0
        for ex in examples:
            lls.append(flat[k:k + len(ex.choices)])
            k += len(ex.choices)
        results[name] = score(examples, lls)
    return results


def format_table(results: dict) -> str:
    """The results as lm-eval prints them (task, metric, value ± stderr, examples)."""
    rows = ["| task | metric | value | stderr | examples |", "|---|---|---:|---:|---:|"]
    for task, r in results.items():
        for metric in ("acc", "acc_norm"):
            rows.append(f"| {task if metric == 'acc' else ''} | {metric} | {r[metric]:.4f} | "
                        f"{r[metric + '_stderr']:.4f} | {r['examples'] if metric == 'acc' else ''} |")
    return "\n".join(rows)
