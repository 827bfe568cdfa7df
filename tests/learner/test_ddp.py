"""Reward-model training under torchrun: 2 processes (DDP, gloo) give the 1-process loss curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.learner.conftest import synthetic

pytestmark = pytest.mark.slow

FLAGS = ["--rm.epochs", "2", "--rm.batch_size", "8", "--rm.max_length", "48", "--rm.learning_rate", "3e-4"]


def run(argv: list[str], tmp_path: Path, name: str) -> list[float]:
    history = tmp_path / f"{name}.json"
    done = subprocess.run([*argv, "--history", str(history)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [row["loss/bt"] for row in json.loads(history.read_text())]


def test_two_process_torchrun_matches_one_process(prepared_model: Path, tmp_path: Path) -> None:
    pairs, _ = synthetic(seed=3, count=32)
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p.prompt[0][1], "chosen": p.chosen, "rejected": p.rejected})
                              for p in pairs))
    job = ["-m", "learner.train_reward", "--model", str(prepared_model), "--pairs", str(data), *FLAGS]
    single = run([sys.executable, *job], tmp_path, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = run([*torchrun, *job], tmp_path, "double")
    assert len(single) == len(double) == 8  # 32 pairs / 8 per step x 2 epochs
    assert single[-1] < single[0] and double[-1] < double[0]  # both learn
    # same global batches, averaged gradients: the same curve up to float reduction order
    assert max(abs(a - b) for a, b in zip(single, double)) < 0.05, (single, double)
