"""Reward-model training as a stand-alone job, the same under `python -m` and `torchrun`:

    torchrun --nproc_per_node 2 -m learner.train_reward --model DIR --pairs pairs.jsonl --history out.json

`pairs.jsonl` rows: {"prompt": "...", "chosen": "...", "rejected": "..."}. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from learner.dataset import Pair
from learner.reward_model import RewardConfig, RewardModel, train


def main() -> int:
    from learner.cli_args import add_dataclass_arguments, dataclass_from_arguments

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="where rank 0 writes the loss curve (JSON)")
    add_dataclass_arguments(parser, RewardConfig, "rm")
    args = parser.parse_args()
    config = dataclass_from_arguments(args, RewardConfig, "rm")
    if dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    pairs = [Pair((("user", r["prompt"]),), r["chosen"], r["rejected"], None) for r in rows]
    model = RewardModel.create(args.model, config)  # same seed on every rank: same initial LoRA
    history = train(model, pairs, [], config)
    if not dist.is_initialized() or dist.get_rank() == 0:
        args.history.write_text(json.dumps(history))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
