"""PPO as a stand-alone job, the same under `python -m` and `torchrun`:

    torchrun --nproc_per_node 2 -m learner.train_ppo --model DIR --reward_models DIR \
        --prompts prompts.jsonl --run_dir RUN [--warm_start ADAPTER] [--ppo.steps 20 ...] [--reward.max_length 160]

`prompts.jsonl` rows: {"prompt": "..."} or {"messages": [{"role": ..., "content": ...}]}. Rank 0
runs the vLLM rollout engine; gloo on CPU, nccl on GPU. Writes RUN/ppo_history.jsonl and the
trained adapter to RUN/candidate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from pydantic import Field

from feedback.settings import load_settings
from learner.config import JobFlags, PPOConfig, RewardConfig
from learner.dataset import load_prompt_file
from learner.ppo import PPOTrainer, write_history
from learner.reward_model import load_current


class PPOJob(JobFlags):
    __doc__ = __doc__
    model: Path = Field(description="Base model directory.")
    reward_models: Path = Field(description="Reward-model root (its CURRENT is used).")
    prompts: Path = Field(description="JSON Lines of prompts.")
    run_dir: Path = Field(description="Checkpoints, history and the adapter go here.")
    warm_start: Path | None = Field(default=None, description="Adapter to start from (e.g. the active one).")
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig, description="The reward model's scoring (max_length).")


def main(argv: list[str] | None = None) -> int:
    prog = "python -m learner.train_ppo"
    job = load_settings(PPOJob, cli_args=sys.argv[1:] if argv is None else argv, prog=prog)
    for flag in ("max_new_tokens", "temperature"):
        if getattr(job.ppo, flag) == 0:
            sys.exit(f"{prog}: --ppo.{flag}: a stand-alone run has no users' sampling to read; give the {flag} to train at")
    if dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    loaded = load_current(job.model, job.reward_models, job.reward)
    if loaded is None:
        sys.exit(f"{prog}: no reward model under {job.reward_models}")
    scorer, _ = loaded
    trainer = PPOTrainer(job.model, job.run_dir, job.ppo, score=scorer.score, warm_start=job.warm_start)
    history = trainer.train(load_prompt_file(job.prompts))
    if trainer.rank == 0:
        write_history(job.run_dir / "ppo_history.jsonl", history)
        trainer.save_adapter(job.run_dir / "candidate")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
