"""The house rules of the code (issue 17), checked on the source so they stay true.

- No import cycle among the modules of qpass/, lowering/ and kernels/ (module-level imports: what runs when a
  module is imported; an import inside a function is a deliberate deferral and is not counted).
- kernels/ and lowering/ read no environment variable but the Triton interpreter switch: variants are chosen by
  explicit arguments.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"qpass": ROOT / "qpass", "qpass.lowering": ROOT / "lowering", "qpass.kernels": ROOT / "kernels"}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the three folders (kernels/ and lowering/ as qpass's)."""
    out = {}
    for prefix, folder in FOLDERS.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = f
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `path` imports at module level (not inside functions or `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package(name, path)
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                found.add(target)
                for alias in node.names:  # `from . import registry` imports a module
                    found.add(f"{target}.{alias.name}")
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            elif hasattr(node, "body") and isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    edges = set()
    for target in found:
        # importing a.b.c runs a, a.b and a.b.c: every one of ours on the way is an edge
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in known and mod != name:
                edges.add(mod)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        # a package's __init__ is what `import pkg.mod` runs first; an edge to it from its own modules is normal
        graph[name] = {m for m in _module_level_imports(name, path, known) if not name.startswith(m + ".")}
    return graph


def test_no_import_cycle_among_qpass_lowering_and_kernels():
    graph = _graph()
    assert len(graph) > 40 and any(graph.values())  # the scan saw the house
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kernels_and_lowering_read_no_environment_but_the_interpreter_switch():
    reads = []
    for folder in ("kernels", "lowering"):
        for f in (ROOT / folder).rglob("*.py"):
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"os\.environ|os\.getenv", line) and "TRITON_INTERPRET" not in line:
                    reads.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert reads == []
