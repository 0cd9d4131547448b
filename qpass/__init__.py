"""qpass: a PyTorch compiler for quantized LLM inference.

    qmodel = qpass.compile(model, "w4a16")            # or a Recipe, or a YAML/JSON file
    print(qpass.report(qmodel))
    ppl = qpass.perplexity(qmodel, ids, seq_len=512)
"""
from . import ops  # noqa: F401  (registers the torch.ops.qpass.* fake-quant ops)
from .api import compile, report
from .evaluate import perplexity
from .export import LoadError, load, save, save_compressed_tensors
from .backend import register as _register_backend
from .recipe import ActivationSpec, CalibrationSpec, PassSpec, Recipe, RecipeError, WeightSpec, recipes

__version__ = "0.1.0"

_register_backend()  # torch.compile(model, backend="qpass", options={"recipe": ...})

__all__ = [
    "compile",
    "report",
    "perplexity",
    "save",
    "load",
    "save_compressed_tensors",
    "LoadError",
    "recipes",
    "Recipe",
    "WeightSpec",
    "ActivationSpec",
    "CalibrationSpec",
    "PassSpec",
    "RecipeError",
]
