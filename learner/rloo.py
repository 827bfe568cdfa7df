"""RLOO: critic-free policy gradient on the reward model, with a leave-one-out baseline.

Each step samples k answers per prompt from vLLM. An answer's reward is its reward-model score less
`kl_coef` x its sequence KL to the reference (the same estimator and adaptive controller as PPO);
its advantage is that reward less the mean reward of the other k - 1 answers to the same prompt
(Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"; Ahmadian et al. 2024, "Back to
Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
https://arxiv.org/abs/2402.14740, eq. 4), as TRL's RLOOTrainer computes it
(`rlhf_reward - (rlhf_reward.sum(0) - rlhf_reward) / (rloo_k - 1)`). No value head: the baseline
needs none. The update is the clipped surrogate (Schulman et al. 2017) with that advantage on every
token of the answer. Hand-written like PPO's math: it is the product's core.
"""

from __future__ import annotations

import time

import torch

from learner import ppo_math as M
from learner.policy import PolicyTrainer, write_history

__all__ = ["RLOOTrainer", "leave_one_out_advantages", "sequence_rewards", "write_history"]


def sequence_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """One reward per answer, (B,): score less kl_coef x the answer's summed per-token KL (B, T)."""
    return scores - kl_coef * (kl * mask).sum(1)


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """rewards (B,) grouped by prompt, k consecutive answers each: reward less the mean of the other k - 1."""
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).flatten()


class RLOOTrainer(PolicyTrainer):
    name = "RLOO"
    value_head = False

    def train_step(self, prompts: list) -> dict:
        c = self.config
        k = c.samples_per_prompt
        # 1.-2. k answers per prompt, grouped (prompt i's are rows i*k .. i*k + k - 1); log-probs and scores
        started, timings, batch, old_logprobs, _, ref_logprobs, scores = self.sample_and_score(prompts)

        # 3. sequence rewards with the KL penalty; leave-one-out advantages within each prompt's group
        t = time.perf_counter()
        kl = M.kl_per_token(old_logprobs, ref_logprobs, c.kl_estimator) * batch.mask  # (B, T)
        rewards = sequence_rewards(scores, kl, batch.mask, self.kl.value)
        advantages = leave_one_out_advantages(rewards, k)
        if c.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        token_advantages = advantages[:, None] * batch.mask  # the answer's advantage on each of its tokens

        # 4. clipped surrogate over minibatches of answers; each rank takes every world-th row
        stats: dict[str, list[float]] = {"policy": [], "clip": [], "entropy": []}
        order = torch.randperm(len(batch.prompts))  # same seed on every rank: the same order
        for _ in range(c.ppo_epochs):
            for i in range(0, len(batch.prompts), c.minibatch_size):
                idx = order[i : i + c.minibatch_size][self.rank :: self.world]
                logprobs, step_logits, _ = self.update(batch, idx)
                mask = batch.mask[idx]
                loss, clip_fraction = M.policy_loss(logprobs, old_logprobs[idx], token_advantages[idx], mask, c.clip_range)
                self.optimizer_step(loss)
                with torch.no_grad():
                    stats["policy"].append(loss.item())
                    stats["clip"].append(clip_fraction.item())
                    stats["entropy"].append(M.masked_mean(M.entropy_from_logits(step_logits), mask).item())
        timings["time/update_s"] = time.perf_counter() - t

        # 5. adapt the KL coefficient to the measured sequence KL
        return self.finish_step(started, timings, batch, scores, kl, rewards, stats)
