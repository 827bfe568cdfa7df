"""`rlhf-loop learn --once`: with no feedback it says so, its JSON report alone on stdout. The cycle
it runs (stored feedback -> reward model -> PPO -> gates -> candidate with lineage, canary) is the
learner service's, tested end to end in tests/e2e/test_loop.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLAGS = ["--reward.epochs", "1", "--reward.batch_size", "8", "--reward.max_length", "48", "--ppo.steps", "2",
         "--ppo.batch_size", "4", "--ppo.minibatch_size", "4", "--ppo.ppo_epochs", "1", "--ppo.max_new_tokens", "16",
         "--ppo.rollout_kv_cache_mib", "128"]


def test_learn_once_without_feedback_says_so_and_prints_only_its_report(prepared_model: Path, tmp_path: Path) -> None:
    empty = subprocess.run([sys.executable, "-m", "rlhf_loop.cli", "learn", "--once", *FLAGS], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "RLHF_HOME": str(tmp_path), "RLHF_MODEL": str(prepared_model)})
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert json.loads(empty.stdout)["candidate"] is None and json.loads(empty.stdout)["reason"] == "no joined feedback yet"
