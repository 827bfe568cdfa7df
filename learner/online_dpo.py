"""Online DPO, best-vs-worst of k: each step samples k answers per prompt from the current policy (vLLM),
the reward model ranks them, and the best and the worst of each prompt form a fresh preference pair;
the DPO loss then trains on those pairs against the reference (the adapter disabled). A prompt whose
answers all score the same teaches nothing and is left out of the step.

Loss: TRL's sigmoid DPO loss (`learner/dpo.py`, Rafailov et al. 2023) on pairs ranked by a reward
model on the policy's own samples, as TRL's OnlineDPOTrainer does with a reward model as its judge
(Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback",
https://arxiv.org/abs/2402.04792), with k >= 2 samples and the best/worst pair (Xu et al. 2023,
"Some things are more CRINGE than others", https://arxiv.org/abs/2312.16682). Hand-written because it is
the product's core; the rollouts, scoring, KL report and checkpoints are the policy learners' own
(learner/policy.py).
"""

from __future__ import annotations

import time

import torch

from learner import ppo_math as M
from learner.dpo import dpo_loss
from learner.policy import PolicyTrainer


def best_and_worst(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of each prompt's best and worst answer (scores (B,) grouped by prompt, k consecutive
    answers each), for the prompts whose answers do not all score the same."""
    grouped = scores.view(-1, k)
    offsets = torch.arange(grouped.shape[0]) * k
    best, worst = grouped.argmax(1) + offsets, grouped.argmin(1) + offsets
    decided = grouped.max(1).values > grouped.min(1).values
    return best[decided], worst[decided]


class OnlineDPOTrainer(PolicyTrainer):
    name = "online_DPO"
    value_head = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.world > 1:  # a step's pair count varies (ties drop out): ranks could take unequal backward passes
            raise ValueError("online DPO runs in one process; use PPO or RLOO under torchrun")

    def train_step(self, prompts: list) -> dict:
        c = self.config
        k = c.samples_per_prompt
        # 1. k answers per prompt, grouped; their log-probs under the policy and the reference, and scores
        started, timings, batch, old_logprobs, _, ref_logprobs, scores = self.sample_and_score(prompts)

        # 2. each prompt's best and worst answer by the reward model: the step's pairs
        t = time.perf_counter()
        chosen, rejected = best_and_worst(scores, k)
        reference = (ref_logprobs * batch.mask).sum(1)

        # 3. the DPO loss on minibatches of pairs (chosen and rejected rows in one forward pass)
        stats: dict[str, list[float]] = {"policy": [], "entropy": [], "accuracy": [], "margin": []}
        order = torch.randperm(len(chosen))
        for _ in range(c.ppo_epochs):
            for i in range(0, len(chosen), c.minibatch_size):
                pairs = order[i : i + c.minibatch_size]
                idx = torch.cat((chosen[pairs], rejected[pairs]))
                logprobs, step_logits, _ = self.update(batch, idx)
                mask = batch.mask[idx]
                sequence = (logprobs * mask).sum(1)
                n = len(pairs)
                losses, chosen_rewards, rejected_rewards = dpo_loss(sequence[:n], sequence[n:], reference[chosen[pairs]],
                                                                    reference[rejected[pairs]], c.beta)
                loss = losses.mean()
                self.optimizer_step(loss)
                with torch.no_grad():
                    stats["policy"].append(loss.item())
                    stats["entropy"].append(M.masked_mean(M.entropy_from_logits(step_logits), mask).item())
                    stats["accuracy"].append((chosen_rewards > rejected_rewards).float().mean().item())
                    stats["margin"].append((chosen_rewards - rejected_rewards).mean().item())
        if not stats["policy"]:  # every prompt's answers tied: nothing to learn this step
            stats = {"policy": [0.0], "entropy": [0.0], "accuracy": [0.0], "margin": [0.0]}
        timings["time/update_s"] = time.perf_counter() - t

        # 4. report the KL to the reference (DPO's beta holds it; the controller only reports)
        kl = M.kl_per_token(old_logprobs, ref_logprobs, c.kl_estimator) * batch.mask
        row = self.finish_step(started, timings, batch, scores, kl, scores, stats)
        row["pairs"] = len(chosen)
        return row
