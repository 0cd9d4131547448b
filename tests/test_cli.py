"""The qpass command, run as a user would, on the real (tiny) stories260K Llama."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "qpass.cli", *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(p.stderr)
    return p


def test_recipes_lists_presets_as_json():
    out = json.loads(run("recipes", "--json").stdout)
    assert {"w8a8", "w4a16", "w4a8", "w4a4"} <= set(out)
    assert "group_size: 64" in run("recipes", "w4a16").stdout


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_quantize_json_on_stories260k(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: mine\nweights: {bits: 4, group_size: 64}\nactivations: {bits: 8, granularity: per_channel}\n"
                      "calibration: {num_samples: 4, seq_len: 128}\n")
    out = json.loads(run("quantize", "--model", str(STORIES), "--recipe", str(recipe), "--eval-tokens", "1024",
                         "--seq-len", "256", "--json").stdout)
    s = out["report"]["summary"]
    assert s["linear_sites"] == 36 and s["quantized"] == 35 and s["graph_breaks"] == 0
    assert out["ppl_before"] > 1 and out["ppl_after"] > 1 and out["ppl_after"] != out["ppl_before"]
    down = next(r for r in out["report"]["rows"] if r["name"] == "model.layers.0.mlp.down_proj")
    assert down["shape"] == "172 -> 64" and down["scheme"].startswith("w4 g64")  # 172 = 64 + 64 + 44


def test_errors_are_clear_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"weights": {"bits": 4, "grup_size": 64}}')
    p = run("quantize", "--recipe", str(bad), "--no-eval", check=False)
    assert p.returncode == 2 and "weights.grup_size: unknown key" in p.stderr
    p = run("eval", "--model", str(tmp_path), check=False)
    assert p.returncode == 2 and "not a local Hugging Face model folder" in p.stderr


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_quantize_save_then_eval_load(tmp_path):
    """quantize --save DIR, then eval --load DIR: the saved model scores as the freshly quantized one."""
    common = ("--model", str(STORIES), "--eval-tokens", "1024", "--seq-len", "256", "--json")
    q = json.loads(run("quantize", "--recipe", "w8a8", "--save", str(tmp_path / "m"),
                       "--compressed-tensors", str(tmp_path / "ct"), *common).stdout)
    assert Path(q["saved"]).joinpath("manifest.json").is_file() and (tmp_path / "ct" / "config.json").is_file()
    e = json.loads(run("eval", "--load", str(tmp_path / "m"), *common).stdout)
    assert abs(e["ppl"] - q["ppl_after"]) <= 1e-4 * q["ppl_after"] and "loaded from" in e["recipe"]
    p = run("quantize", "--recipe", "w8a8", "--no-eval", "--save", str(tmp_path / "m"), "--model", str(STORIES), check=False)
    assert p.returncode == 2 and "exists" in p.stderr


def test_help_answers_without_importing_torch():
    """`qpass --help` is instant: neither the CLI module nor qpass's __init__ load torch."""
    code = ("import sys\nfrom qpass.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint(sorted(m for m in ('torch', 'transformers', 'triton') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"
    p = subprocess.run([sys.executable, "-m", "qpass", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "quantize" in p.stdout


def _no_model_loads(monkeypatch):
    from qpass import models

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load", refuse)


@pytest.mark.parametrize("argv, message", [
    (["quantize", "--save", "{existing}", "--no-eval"], "already exists (add --overwrite to replace it)"),
    (["quantize", "--compressed-tensors", "{existing}", "--no-eval"], "--compressed-tensors"),
    (["quantize", "--overwrite", "--no-eval"], "--overwrite only applies with --save"),
    (["quantize", "--seq-len", "1"], "--seq-len must be an integer of at least 2"),
    (["quantize", "--plot", "{existing}/no/such/dir/x.png"], "does not exist"),
    (["quantize", "--recipe", "w9a9"], "w9a9"),
    (["eval", "--load", "{existing}"], "no manifest.json"),
    (["eval", "--load", "{existing}", "--recipe", "w4a16"], "takes no --recipe"),
])
def test_arguments_are_checked_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    from qpass.cli import main

    _no_model_loads(monkeypatch)
    (tmp_path / "out").mkdir()
    argv = [a.replace("{existing}", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_compressed_tensors_without_the_package_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from qpass.cli import main

    _no_model_loads(monkeypatch)
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # an import of it now raises ImportError
    assert main(["quantize", "--compressed-tensors", str(tmp_path / "ct"), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'qpass[compressed]'" in err and err.count("\n") == 1, err


def test_model_folder_without_tokenizer_is_one_clear_line(tmp_path):
    import shutil

    if not STORIES.exists():
        pytest.skip("../shared/models/stories260K not present")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(STORIES / f, tmp_path / f)
    p = run("eval", "--model", str(tmp_path), check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "has no tokenizer" in p.stderr and "tokenizer.json" in p.stderr


def test_json_errors_are_json(tmp_path):
    p = run("eval", "--model", str(tmp_path), "--json", check=False)
    assert p.returncode == 2
    out = json.loads(p.stdout)
    assert "no config.json" in out["error"] and out["error_type"] == "FileNotFoundError"


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_calibrate_on_the_users_own_text(tmp_path):
    """--calib FILE (plain text, or JSON Lines with --calib-field): the static ranges come from that text — a
    different text gives a different quantized model — and the JSON output says which data was used."""
    import gzip

    story = "Once upon a time there was a little girl named Lily. She liked to play in the park with her dog.\n\n"
    (tmp_path / "mine.txt").write_text(story * 60)
    records = [json.dumps({"id": i, "content": f"Tim threw the red ball number {i} to Sam, and Sam laughed."})
               for i in range(120)]
    with gzip.open(tmp_path / "mine.jsonl.gz", "wt") as f:
        f.write("\n".join(records) + "\n")
    common = ("quantize", "--model", str(STORIES), "--recipe", "w8a8-static", "--calib-samples", "4",
              "--calib-seq-len", "64", "--eval-tokens", "512", "--seq-len", "128", "--json")
    txt = json.loads(run(*common, "--calib", str(tmp_path / "mine.txt")).stdout)
    jsonl = json.loads(run(*common, "--calib", str(tmp_path / "mine.jsonl.gz"), "--calib-field", "content").stdout)
    novel = json.loads(run(*common).stdout)
    assert txt["calibration"] == {"source": str(tmp_path / "mine.txt"), "samples": 4, "seq_len": 64}
    assert novel["calibration"]["source"] == "emma"
    assert len({txt["ppl_after"], jsonl["ppl_after"], novel["ppl_after"]}) == 3  # each text its own ranges


@pytest.mark.parametrize("content, argv, message", [
    ('{"content": "hi"}\n', ["--calib", "{f}.jsonl"], ":1: no 'text' field (name the field that holds the text)"),
    ('{"text": 3}\n', ["--calib", "{f}.jsonl"], "field 'text' holds int, not text"),
    ('{"text": "a"}\nnot json\n', ["--calib", "{f}.jsonl"], ":2: not a JSON object"),
    ("   \n", ["--calib", "{f}.txt"], "holds no text"),
    ("some text", ["--calib", "{f}.txt", "--calib-field", "text"], "applies to a JSON Lines file"),
    ("some text", ["--calib-field", "text"], "--calib-field only applies with --calib"),
    ("some text", ["--calib", "{f}.missing.txt"], "no such file"),
    ("some text", ["--calib", "{f}.txt", "--calib-seq-len", "1"], "--calib-seq-len must be an integer of at least 2"),
    ("some text", ["--calib", "{f}.txt", "--recipe", "w4a16"], "recipe 'w4a16' uses no calibration data; with calibration data, --recipe w4a16-gptq"),
])
def test_calibration_file_errors_come_before_any_work(content, argv, message, tmp_path, monkeypatch, capsys):
    from qpass.cli import main

    _no_model_loads(monkeypatch)
    for suffix in (".jsonl", ".txt"):
        (tmp_path / f"c{suffix}").write_text(content)
    argv = [a.replace("{f}", str(tmp_path / "c")) for a in argv]
    assert main(["quantize", "--recipe", "w8a8-static", "--no-eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_too_short_a_calibration_text_names_the_file_and_the_counts():
    from qpass import data

    class Tok:  # one token per word
        def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
            import torch

            return type("T", (), {"input_ids": torch.arange(len(text.split()))[None]})()

    with pytest.raises(ValueError, match=r"mine.txt has only 2 sequences of 10 tokens \(25 tokens\); asked for 3"):
        data.token_batches(Tok(), "w " * 25, 3, 10, what="mine.txt")
    assert [b.shape for b in data.token_batches(Tok(), "w " * 25, 2, 10, batch_size=1)] == [(1, 10), (1, 10)]


WIKITEXT2 = STORIES.parents[1] / "data" / "wikitext-2-raw" / "wiki.test.raw"


@pytest.mark.skipif(not WIKITEXT2.exists(), reason="../shared/data/wikitext-2-raw not present")
def test_wikitext2_text_is_the_papers_join_of_the_hf_rows():
    from qpass import data

    text = data.wikitext2_text(WIKITEXT2)
    # HF rows "", " = Robert Boulter = \n", "", " Robert Boulter is ..." joined by blank lines (GPTQ's protocol)
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film")
    assert text.count("\n\n") >= 4357  # 4,358 rows, one separator between each pair


@pytest.mark.skipif(not (STORIES.exists() and WIKITEXT2.exists()), reason="../shared stories260K / wikitext-2-raw not present")
def test_eval_on_wikitext2_and_on_a_text_file(tmp_path):
    common = ("eval", "--model", str(STORIES), "--seq-len", "256", "--json")
    wiki = json.loads(run(*common, "--eval-wikitext2", str(WIKITEXT2), "--eval-tokens", "2048").stdout)
    assert wiki["text"].startswith("WikiText-2 test") and wiki["tokens"] == 2048 and 1 < wiki["ppl"] < 1e4
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"body": f"Lily saw {i} birds in the tree."}) for i in range(40)))
    mine = json.loads(run(*common, "--eval-text", str(tmp_path / "t.jsonl"), "--eval-field", "body", "--eval-tokens", "0").stdout)
    assert mine["text"] == str(tmp_path / "t.jsonl") and mine["tokens"] > 256 and mine["ppl"] != wiki["ppl"]
    p = run(*common, "--eval-text", str(tmp_path / "t.jsonl"), "--eval-wikitext2", str(WIKITEXT2), check=False)
    assert p.returncode == 2 and "give one of --eval-text and --eval-wikitext2" in p.stderr


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_quantize_in_bfloat16_matches_float32():
    """--dtype bfloat16 (on the CPU here; --device picks the GPU when there is one): the model, calibration and
    evaluation run in bf16 and land within 1 % of the float32 perplexity."""
    common = ("quantize", "--model", str(STORIES), "--recipe", "w8a8-static", "--calib-samples", "4",
              "--calib-seq-len", "64", "--eval-tokens", "2048", "--seq-len", "256", "--device", "cpu", "--json")
    f32 = json.loads(run(*common).stdout)
    b16 = json.loads(run(*common, "--dtype", "bfloat16").stdout)
    assert (b16["dtype"], b16["device"], f32["dtype"]) == ("bfloat16", "cpu", "float32")
    assert abs(b16["ppl_after"] - f32["ppl_after"]) <= 0.01 * f32["ppl_after"], (b16["ppl_after"], f32["ppl_after"])


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
def test_offload_keeps_the_weights_where_they_were_loaded_and_calibrates_block_by_block_on_device():
    out = json.loads(run("quantize", "--model", str(STORIES), "--recipe", "w4a16-gptq", "--calib-samples", "4",
                         "--calib-seq-len", "64", "--offload", "--device", "cpu", "--no-eval", "--json").stdout)
    log = out["report"]["log"]
    assert out["device"] == "cpu" and any(line.startswith("calibration: block by block") and " on cpu " in line
                                          for line in log), log


def test_calibration_flags_without_a_recipe_that_reads_data_are_refused(tmp_path, monkeypatch, capsys):
    from qpass.cli import main

    _no_model_loads(monkeypatch)
    assert main(["eval", "--calib-samples", "3"]) == 2
    assert "--calib-samples applies when eval quantizes: give --recipe" in capsys.readouterr().err
    r = tmp_path / "r.yaml"
    r.write_text("weights: {bits: 8, group_size: null}\nactivations: {granularity: per_channel}\n"
                 "calibration: {skip_tokens: 4}\n")
    assert main(["quantize", "--recipe", str(r), "--calib-seq-len", "4", "--no-eval"]) == 2
    assert "--calib-seq-len must exceed the recipe's calibration.skip_tokens (4), got 4" in capsys.readouterr().err


def test_a_device_torch_cannot_see_is_refused_before_any_work(monkeypatch, capsys):
    import torch

    from qpass.cli import main

    _no_model_loads(monkeypatch)
    bad = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 on a machine without one)
    assert main(["quantize", "--device", bad, "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert f"--device {bad}: torch sees {torch.cuda.device_count()} CUDA device(s)" in err and err.count("\n") == 1
    assert main(["quantize", "--device", "tpu", "--no-eval"]) == 2
    assert "--device tpu" in capsys.readouterr().err
