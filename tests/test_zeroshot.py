"""Zero-shot accuracy (qpass/zeroshot.py, `qpass eval --tasks`): lm-eval's protocol, checked by hand on the real
tiny stories260K with the shared PIQA / HellaSwag files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qpass import zeroshot
from qpass.zeroshot import Example

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT / "shared" / "models" / "stories260K"
DATA = ROOT / "shared" / "data"
pytestmark = pytest.mark.skipif(not (STORIES.exists() and (DATA / "piqa").exists() and (DATA / "hellaswag").exists()),
                                reason="../shared stories260K / piqa / hellaswag not present")


@pytest.fixture(scope="module")
def stories():
    import transformers as tf

    return (tf.AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval(),
            tf.AutoTokenizer.from_pretrained(STORIES))


def _direct(model, tok, context, choice):
    """Sum of log p(continuation tokens | prefix), one unpadded sequence at a time."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole)))


def test_two_example_task_by_hand(stories):
    """Batched, padded scoring equals a direct loop over logits; acc and acc_norm follow from it by hand."""
    model, tok = stories
    task = [Example("Once upon a time, there was a little", ["girl named Lily.", "dog who liked to play in the park."], 1),
            Example("Tom went to the park. He saw a", ["big tree.", "cat", "red ball and a happy dog."], 0)]
    requests = [(ex.context, " " + c) for ex in task for c in ex.choices]
    batched = zeroshot.loglikelihoods(model, tok, requests, batch_size=4, progress=False)
    direct = [_direct(model, tok, ex.context, c) for ex in task for c in ex.choices]
    assert batched == pytest.approx(direct, abs=1e-4)
    lls = [batched[:2], batched[2:]]
    acc = [float(max(range(len(ll)), key=ll.__getitem__) == ex.gold) for ex, ll in zip(task, lls)]
    norm = [float(max(range(len(ll)), key=lambda j: ll[j] / len(ex.choices[j])) == ex.gold) for ex, ll in zip(task, lls)]
    res = zeroshot.score(task, lls)
    assert res["acc"] == sum(acc) / 2 and res["acc_norm"] == sum(norm) / 2 and res["examples"] == 2


def test_tasks_follow_lm_eval_formats():
    piqa = zeroshot.load_task("piqa", DATA, limit=3)
    assert piqa[0].context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert [ex.gold for ex in piqa] == [0, 1, 1] and len(piqa[0].choices) == 2
    hs = zeroshot.load_task("hellaswag", DATA, limit=2)
    assert hs[0].context == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b.capitalize(), as lm-eval
    assert hs[0].gold == 3 and hs[0].choices[3] == "starts pulling up roofing on a roof."
    assert len(zeroshot.load_task("hellaswag", DATA)) == 10042 and len(zeroshot.load_task("piqa", DATA)) == 1838
    # lm-eval's preprocess, quirks included (strip before removing tags; one pass of "  " -> " ")
    assert zeroshot.hellaswag_preprocess(" [header] How to x [title] Do y.  [step] z ") == " How to x. Do y.  z"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'arc'; known tasks: piqa, hellaswag"):
        zeroshot.check_tasks(["piqa", "arc"], DATA)
    r = subprocess.run([sys.executable, "-m", "qpass", "eval", "--model", str(STORIES), "--tasks", "piqa,winogrande"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown task 'winogrande'; known tasks: piqa, hellaswag" in r.stderr


def test_cli_prints_table_and_json():
    base = [sys.executable, "-m", "qpass", "eval", "--model", str(STORIES), "--tasks", "piqa,hellaswag",
            "--limit", "6", "--task-data", str(DATA)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300, check=True)
    assert "| task | metric | value | stderr | examples |" in r.stdout and "| hellaswag | acc |" in r.stdout
    r = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(r.stdout)
    assert set(doc["tasks"]) == {"piqa", "hellaswag"} and doc["limit"] == 6
    assert all(t["examples"] == 6 and 0 <= t["acc"] <= 1 and 0 <= t["acc_norm"] <= 1 for t in doc["tasks"].values())
