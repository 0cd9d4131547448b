"""qpass: a PyTorch compiler for quantized LLM inference.

    qmodel = qpass.compile(model, "w4a16")            # or a Recipe, a dict, or a YAML/JSON file
    print(qpass.report(qmodel))
    ppl = qpass.perplexity(qmodel, ids, seq_len=512)

`import qpass` is cheap: the public names load (with torch) on first use, so `qpass --help` answers at once.
"""
import importlib as _importlib
import os as _os

# In a source checkout kernels/ and lowering/ sit beside qpass/ (an installed wheel has them inside it). They are
# plain folders, not packages of their own, so that they never shadow the PyPI distributions of those names when
# the checkout root is on sys.path; looking beside qpass/ makes them qpass.kernels and qpass.lowering all the same.
_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")):
    __path__.append(_checkout)

__version__ = "0.1.0"

_PUBLIC = {
    "compile": "api",
    "report": "api",
    "perplexity": "evaluate",
    "save": "export",
    "load": "export",
    "save_compressed_tensors": "export_compressed",
    "from_compressed_tensors": "import_compressed",
    "LoadError": "export",
    "static_cache": "static_cache",
    "recipes": "recipe",
    "Recipe": "recipe",
    "WeightSpec": "recipe",
    "ActivationSpec": "recipe",
    "CalibrationSpec": "recipe",
    "PassSpec": "recipe",
    "RecipeError": "recipe",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    """Load the whole public face on first use of any of it: every module first, then the names, so that a
    submodule imported later can never rebind one of them (as importing a submodule binds its name in qpass)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'qpass' has no attribute {name!r}")
    modules = {m: _importlib.import_module(f".{m}", __name__) for m in sorted(set(_PUBLIC.values()))}
    _importlib.import_module(".lowering.qdq_ops", __name__)  # registers the torch.ops.qpass.* fake-quant ops
    _importlib.import_module(".backend", __name__).register()  # torch.compile(model, backend="qpass")
    for public, module in _PUBLIC.items():
        globals()[public] = getattr(modules[module], public)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
