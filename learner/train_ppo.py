"""PPO as a stand-alone job, the same under `python -m` and `torchrun`:

    torchrun --nproc_per_node 2 -m learner.train_ppo --model DIR --reward-models DIR \
        --prompts prompts.jsonl --run-dir RUN [--warm-start ADAPTER] [--ppo.steps 20 ...]

`prompts.jsonl` rows: {"prompt": "..."} or {"messages": [{"role": ..., "content": ...}]}. Rank 0
runs the vLLM rollout engine; gloo on CPU, nccl on GPU. Writes RUN/ppo_history.jsonl and the
trained adapter to RUN/candidate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from learner.dataset import load_prompt_file
from learner.ppo import PPOConfig, PPOTrainer, write_history
from learner.reward_model import RewardConfig, load_current


def main() -> int:
    from learner.cli_args import add_dataclass_arguments, dataclass_from_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="base model directory")
    parser.add_argument("--reward-models", type=Path, required=True, help="reward-model root (its CURRENT is used)")
    parser.add_argument("--prompts", type=Path, required=True, help="JSON Lines of prompts")
    parser.add_argument("--run-dir", type=Path, required=True, help="checkpoints, history and the adapter go here")
    parser.add_argument("--warm-start", type=Path, help="adapter to start from (e.g. the active one)")
    add_dataclass_arguments(parser, PPOConfig, "ppo")
    add_dataclass_arguments(parser, RewardConfig, "rm")
    args = parser.parse_args()
    ppo = dataclass_from_arguments(args, PPOConfig, "ppo")
    if ppo.max_new_tokens == 0:
        parser.error("--ppo.max_new_tokens: a stand-alone run has no users' lengths to read; give the length to train at")
    if dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    loaded = load_current(args.model, args.reward_models, dataclass_from_arguments(args, RewardConfig, "rm"))
    if loaded is None:
        parser.error(f"no reward model under {args.reward_models}")
    scorer, _ = loaded
    trainer = PPOTrainer(args.model, args.run_dir, ppo, score=scorer.score,
                         warm_start=args.warm_start)
    history = trainer.train(load_prompt_file(args.prompts))
    if trainer.rank == 0:
        write_history(args.run_dir / "ppo_history.jsonl", history)
        trainer.save_adapter(args.run_dir / "candidate")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
