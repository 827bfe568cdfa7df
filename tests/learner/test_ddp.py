"""Training under torchrun: 2 processes (DDP, gloo) give the 1-process loss curve (reward model) and
the 1-process update (PPO)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import synthetic

pytestmark = pytest.mark.slow

FLAGS = ["--reward.epochs", "2", "--reward.batch_size", "8", "--reward.max_length", "48", "--reward.learning_rate", "3e-4"]


def run(argv: list[str], tmp_path: Path, name: str) -> list[float]:
    history = tmp_path / f"{name}.json"
    done = subprocess.run([*argv, "--history", str(history)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [row["loss/bt"] for row in json.loads(history.read_text())]


def test_two_process_torchrun_matches_one_process(prepared_model: Path, tmp_path: Path) -> None:
    pairs, _ = synthetic(seed=3, count=16)
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p.prompt[0][1], "chosen": p.chosen, "rejected": p.rejected})
                              for p in pairs))
    job = ["-m", "learner.train_reward", "--model", str(prepared_model), "--pairs", str(data), *FLAGS]
    single = run([sys.executable, *job], tmp_path, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = run([*torchrun, *job], tmp_path, "double")
    assert len(single) == len(double) == 4  # 16 pairs / 8 per step x 2 epochs
    assert single[-1] < single[0] and double[-1] < double[0]  # both learn
    # same global batches, averaged gradients: the same curve up to float reduction order
    assert max(abs(a - b) for a, b in zip(single, double)) < 0.05, (single, double)


PPO_FLAGS = ["--ppo.steps", "2", "--ppo.batch_size", "4", "--ppo.minibatch_size", "4", "--ppo.ppo_epochs", "1",
             "--ppo.max_new_tokens", "16", "--ppo.temperature", "1.0", "--ppo.learning_rate", "5e-4", "--ppo.rollout_kv_cache_mib", "128",
             "--reward.max_length", "48"]


def lora_b(run_dir: Path):
    """The trained LoRA B matrices (zero at the start), flattened into one vector."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(run_dir / "candidate" / "adapter_model.safetensors")
    return torch.cat([w.flatten() for name, w in sorted(weights.items()) if "lora_B" in name])


def test_ppo_two_process_torchrun_matches_one_process(prepared_model: Path, rule_reward_model, rollouts,
                                                     tmp_path: Path) -> None:
    import torch

    from learner.dataset import load_prompt_file
    from learner.config import PPOConfig, RewardConfig
    from learner.ppo import PPOTrainer
    from learner.reward_model import load_current

    root, _, _ = rule_reward_model
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"In one short sentence, what are {t}?"})
                                 for t in ["owls", "tea", "maps", "bees", "jazz", "kites"]))
    # one process, in this one (the session's rollout engine): the baseline
    scorer, _ = load_current(prepared_model, root, RewardConfig(max_length=48))
    config = PPOConfig(steps=2, batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=16, temperature=1.0, learning_rate=5e-4)
    single = PPOTrainer(prepared_model, tmp_path / "run-1", config, lambda p, t: scorer.score(p, t), rollouts=rollouts)
    one = single.train(load_prompt_file(prompts))
    single.save_adapter(tmp_path / "run-1" / "candidate")
    del single, scorer

    # two processes under torchrun, the same job flags
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "learner.train_ppo", "--model", str(prepared_model), "--reward_models", str(root),
            "--prompts", str(prompts), "--run_dir", str(tmp_path / "run-2"), *PPO_FLAGS]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    two = [json.loads(line) for line in (tmp_path / "run-2" / "ppo_history.jsonl").read_text().splitlines()]

    assert [row["step"] for row in one] == [row["step"] for row in two] == [1, 2]
    # step 1: the same rollouts (rank 0, same seed) and the same reward model: the same scores and KL
    assert abs(one[0]["objective/scores"] - two[0]["objective/scores"]) < 1e-3, (one[0], two[0])
    assert abs(one[0]["objective/kl"] - two[0]["objective/kl"]) < 1e-3, (one[0], two[0])
    # the update: DDP-averaged gradients of the two halves move the LoRA the way the whole batch does
    a, b = lora_b(tmp_path / "run-1"), lora_b(tmp_path / "run-2")
    assert a.abs().sum() > 0 and b.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9, (one, two)
