"""README.md stays true: its Python runs as written, and its test command is the one CI runs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_and_the_ci_test_command():
    assert BLOCKS
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"## Run the tests\s+```bash\n(.*?)\n```", README, flags=re.S).group(1).strip()
    assert command == "python -m pytest -q" and "python3 -m pytest -q" in ci


@pytest.mark.skipif(not STORIES.exists(), reason="../shared/models/stories260K not present")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_runs(index, tmp_path):
    """Each block runs as written in a fresh interpreter, with one substitution: the tiny stories260K model
    for SmolLM2 (the same Llama architecture, seconds instead of minutes in CI)."""
    code = BLOCKS[index].replace('models.load("smollm2")', f"models.load({str(STORIES)!r})")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip(), "the block printed nothing"
