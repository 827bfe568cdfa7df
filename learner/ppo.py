"""KL-constrained PPO on a LoRA adapter, with vLLM rollouts.

Reward: reward-model score on the last token minus `kl_coef` x per-token KL (k1 or k3), with an
adaptive `kl_coef` toward `kl_target`; advantages by GAE with a value head on the policy's trunk.
Algorithm after Ziegler et al. 2019 and Ouyang et al. 2022 (PPO-ptx without the ptx term). The
policy, reference, rollouts, scoring and DDP are shared with the other learners (learner/policy.py).
"""

from __future__ import annotations

import time

import torch

from learner import ppo_math as M
from learner.policy import PolicyTrainer, write_history

__all__ = ["PPOTrainer", "write_history"]


class PPOTrainer(PolicyTrainer):
    name = "PPO"
    value_head = True

    def train_step(self, prompts: list) -> dict:
        c = self.config
        # 1.-3. rollouts from vLLM with the current adapter; old log-probs and values, reference log-probs, scores
        started, timings, batch, old_logprobs, old_values, ref_logprobs, scores = self.sample_and_score(prompts)

        # 4. rewards: score on the last token, KL penalty on every token; GAE
        t = time.perf_counter()
        kl = M.kl_per_token(old_logprobs, ref_logprobs, c.kl_estimator) * batch.mask  # (B, T)
        rewards = M.token_rewards(M.baseline(scores, c.score_baseline), kl, batch.mask, self.kl.value)
        if c.whiten_rewards:
            rewards = M.masked_whiten(rewards, batch.mask, shift_mean=False) * batch.mask
        advantages, returns = M.gae(rewards, old_values, batch.mask, c.gamma, c.lam)
        advantages = M.masked_whiten(advantages, batch.mask) * batch.mask

        # 5. clipped PPO updates over minibatches; each rank takes every world-th row of a minibatch
        stats: dict[str, list[float]] = {"policy": [], "value": [], "clip": [], "entropy": []}
        order = torch.randperm(len(prompts))  # same seed on every rank: the same order
        for _ in range(c.ppo_epochs):
            for i in range(0, len(prompts), c.minibatch_size):
                idx = order[i : i + c.minibatch_size][self.rank :: self.world]
                logprobs, step_logits, new_values = self.update(batch, idx)
                mask = batch.mask[idx]
                pg_loss, clip_fraction = M.policy_loss(logprobs, old_logprobs[idx], advantages[idx], mask, c.clip_range)
                vf_loss = M.value_loss(new_values, old_values[idx], returns[idx], mask, c.clip_range_value)
                self.optimizer_step(pg_loss + c.vf_coef * vf_loss)
                with torch.no_grad():
                    stats["policy"].append(pg_loss.item())
                    stats["value"].append(vf_loss.item())
                    stats["clip"].append(clip_fraction.item())
                    stats["entropy"].append(M.masked_mean(M.entropy_from_logits(step_logits), mask).item())
        timings["time/update_s"] = time.perf_counter() - t

        # 6. adapt the KL coefficient to the measured sequence KL
        return self.finish_step(started, timings, batch, scores, kl, scores - self.kl.value * kl.sum(1), stats)
