"""README.md stays true: its Python runs as written, and its test command is the one CI runs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
SMOLLM2 = 'models.load("smollm2")'


def test_readme_has_python_and_the_ci_test_command():
    assert BLOCKS, "README.md has no ```python block"
    command = re.search(r"## Run the tests\s+```bash\n(.*?)\n```", README, flags=re.S).group(1).strip()
    assert command == "python -m pytest -q -n auto --dist loadfile --durations=15"
    assert "python3 -m pytest -q -n auto --dist loadfile --durations=15" in (ROOT / ".ci" / "run").read_text()  # what CI runs, after the same install


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_runs(index, tmp_path):
    """Each block runs as written in a fresh interpreter, in an empty folder, with one textual substitution:
    `models.load("smollm2")` loads the tiny stories260K folder instead (the same Llama architecture and the
    same call, a local folder being what models.load takes besides "smollm2"; seconds instead of SmolLM2's
    one-time conversion and minutes of CPU). Substituting the text keeps the README free of test hooks such as
    an environment variable a reader would have to understand; the assertion below keeps the substitution
    honest: a block that loads SmolLM2 some other way fails here instead of quietly running the big model."""
    block = BLOCKS[index]
    rest = block.replace(SMOLLM2, "")
    assert '"smollm2"' not in rest and "'smollm2'" not in rest, f"load SmolLM2 as {SMOLLM2}: the test swaps that"
    code = block.replace(SMOLLM2, f"models.load({str(STORIES)!r})")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    if SMOLLM2 in block:  # the quickstart: a report, then perplexity before -> after
        assert re.search(r"^qpass report — recipe '[^']+': \d+/36 linear sites quantized", p.stdout, re.M), p.stdout
        before, after = map(float, re.search(r"^([0-9.]+) -> ([0-9.]+)$", p.stdout, re.M).groups())
        assert 1 < before < 512 and before != after < 1.5 * before, (before, after)  # 512: stories260K's vocab
    assert p.stdout.strip(), "the block printed nothing"
    assert not list(tmp_path.iterdir()), "the block wrote files into the current folder"
