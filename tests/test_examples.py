"""Every script in examples/ runs, as a user would run it, on the real tiny stories260K model (--smoke)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent / "shared" / "models" / "stories260K"

# script -> (extra arguments, text its output must contain); {tmp} is a fresh folder of the test's
RUNS = {
    "quantize_and_evaluate.py": ([], "perplexity on 512 tokens of Pride and Prejudice"),
    "torch_compile_backend.py": ([], "generated:"),
    "save_reload_generate.py": (["--out", "{tmp}/saved"], "reloaded w4a16 and generated:"),
    # w8a8: stories260K's FFN (172 wide) takes no whole groups of 64, which compressed-tensors requires
    "export_compressed_tensors.py": (["--recipe", "w8a8", "--out", "{tmp}/ct"], "reloaded by transformers"),
    "custom_recipe.py": ([], "a bad recipe is refused: weights.group_sze: unknown key"),
}


def test_every_example_has_a_smoke_run():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(RUNS)


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
@pytest.mark.parametrize("script", sorted(RUNS))
def test_example_runs(script, tmp_path):
    extra, expect = RUNS[script]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    cmd = [sys.executable, str(ROOT / "examples" / script), "--model", str(STORIES), "--smoke", *argv]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert expect in p.stdout, p.stdout[-3000:]
