"""The checkout's top-level folders never shadow an installed distribution (the lesson of PyPI's `kernels`).

`python -m pytest`, `python -m qpass` and `python -c` put the checkout root first on sys.path; a regular package
there named like a distribution (our old `kernels/`) is then imported instead of it and broke transformers.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"qpass"}  # our own distribution: shadowing it with the checkout is the point of a checkout
FOLDERS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and p.name.isidentifier())

PROBE = """
import importlib.util, json, sys
out = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    out[name] = None if spec is None else (spec.origin, list(spec.submodule_search_locations or []))
print(json.dumps(out))
"""


def _specs(cwd) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *FOLDERS], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_design_card_folders_are_here():
    assert {"qpass", "kernels", "lowering", "examples", "tests", "docs", "benchmarks"} <= set(FOLDERS)


def test_no_top_level_folder_is_a_package_but_ours():
    packages = [f for f in FOLDERS if (ROOT / f / "__init__.py").exists() and f not in OURS]
    assert not packages, f"{packages} would shadow any installed distribution of that name from the checkout root"


def test_every_top_level_name_imports_the_same_from_the_root_as_from_elsewhere(tmp_path):
    """A plain folder is only a namespace portion: an installed regular package of that name still wins."""
    here, elsewhere = _specs(ROOT), _specs(tmp_path)
    for name in FOLDERS:
        if name in OURS:
            continue
        a, b = here[name], elsewhere[name]
        if b is not None:  # installed: the root must find the same thing
            assert a == b, f"`import {name}` from the checkout root finds {a}, elsewhere {b}"
        else:  # not installed: at most an empty namespace of our folder, never a module with code
            assert a is None or a[0] is None, f"`import {name}` from the checkout root runs {a[0]}"


def test_transformers_kernels_and_qpass_from_the_root():
    """With PyPI `kernels` installed (transformers >= 5.25 depends on it) it is the one imported, and both
    `python -m qpass --help` and qpass.kernels still work from the root."""
    code = "import transformers, kernels, qpass.kernels.formats as f; print(kernels.__file__); print(f.__file__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if "No module named 'kernels'" in r.stderr:  # an older transformers without the dependency
        code = "import transformers, qpass.kernels.formats as f; print('-'); print(f.__file__)"
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    pypi_kernels, ours = r.stdout.split()
    assert not pypi_kernels.startswith(str(ROOT / "kernels")), pypi_kernels
    assert Path(ours).parent.name == "kernels"
    r = subprocess.run([sys.executable, "-m", "qpass", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "quantize" in r.stdout, r.stderr
