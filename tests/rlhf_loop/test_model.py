"""Model preparation: a real dequantized directory that transformers and vLLM load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from rlhf_loop.model import MARKER, is_prepared, prepare


@pytest.mark.slow  # a real conversion from the GGUF (~20 s of a core), shared with the suite's engines
def test_prepared_directory_is_plain_safetensors_without_gguf_quantization(prepared_model: Path) -> None:
    assert is_prepared(prepared_model)
    config = json.loads((prepared_model / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    with safe_open(prepared_model / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
        assert "model.embed_tokens.weight" in names
        assert weights.get_tensor("model.embed_tokens.weight").shape == (config["vocab_size"], config["hidden_size"])
    assert (prepared_model / "tokenizer.json").is_file()
    assert not list(prepared_model.parent.glob(".*staging*"))


@pytest.mark.slow
def test_prepare_is_idempotent(prepared_model: Path) -> None:
    weights = prepared_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.monotonic()
    assert prepare(prepared_model) == prepared_model
    assert time.monotonic() - started < 1.0  # nothing was converted again
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_killed_preparation_leaves_no_half_written_model(tmp_path: Path) -> None:
    target = tmp_path / "model"
    child = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path; from rlhf_loop.model import prepare; prepare(Path({str(target)!r}))"],
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".model.staging-*")) and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until it is writing
    assert child.poll() is None, "preparation ended before it could be interrupted"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not target.exists()
    # the next run cleans the leftover staging directory and finishes the job
    assert is_prepared(prepare(target))
    assert not list(tmp_path.glob(".model.staging-*"))
    assert (target / MARKER).is_file()


def test_the_gguf_is_parsed_once_per_preparation_and_gguf_is_left_as_it_was(tmp_path: Path) -> None:
    import gguf

    from rlhf_loop.model import _gguf_parsed_once

    tiny = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(tiny), "llama")
    writer.add_block_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with pytest.raises(RuntimeError):
        with _gguf_parsed_once():
            first, second = gguf.GGUFReader(str(tiny)), gguf.GGUFReader(str(tiny))
            assert first is second  # one parse serves the config, weights and tokenizer reads
            raise RuntimeError("a failed conversion")
    assert gguf.GGUFReader is original and isinstance(first, original)
