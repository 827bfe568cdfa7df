"""Reward-model training as a stand-alone job, the same under `python -m` and `torchrun`:

    torchrun --nproc_per_node 2 -m learner.train_reward --model DIR --pairs pairs.jsonl --history out.json \
        [--reward.epochs 2 ...]

`pairs.jsonl` rows: {"prompt": "...", "chosen": "...", "rejected": "..."}. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from pydantic import Field

from feedback.settings import load_settings
from learner.config import JobFlags, RewardConfig
from learner.dataset import Pair
from learner.reward_model import RewardModel, train


class RewardJob(JobFlags):
    __doc__ = __doc__
    model: Path = Field(description="Base model directory.")
    pairs: Path = Field(description="JSON Lines of preference pairs.")
    history: Path = Field(description="Where rank 0 writes the loss curve (JSON).")
    reward: RewardConfig = Field(default_factory=RewardConfig)


def main(argv: list[str] | None = None) -> int:
    job = load_settings(RewardJob, cli_args=sys.argv[1:] if argv is None else argv, prog="python -m learner.train_reward")
    if dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rows = [json.loads(line) for line in job.pairs.read_text().splitlines() if line.strip()]
    pairs = [Pair((("user", r["prompt"]),), r["chosen"], r["rejected"], None) for r in rows]
    model = RewardModel.create(job.model, job.reward)  # same seed on every rank: same initial LoRA
    history = train(model, pairs, [], job.reward)
    if not dist.is_initialized() or dist.get_rank() == 0:
        job.history.write_text(json.dumps(history))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
