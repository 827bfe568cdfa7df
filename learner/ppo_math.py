"""The PPO math as small pure functions: KL estimators, adaptive KL control, whitening, GAE,
clipped losses. Hand-written because they are the product's core; each cites its source and is
tested against a reference implementation.

Shapes: B = rollouts in a batch, T = response tokens; `mask` is 1 on real response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked entries (as TRL's masked_var)."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    return ((values - mean) ** 2 * mask).sum() / (count - 1).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked entries; `shift_mean=False` keeps the mean (for rewards)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Literal["k1", "k3"]) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy, (B, T).

    k1 = log p - log q (unbiased, high variance, can be negative per token);
    k3 = (r - 1) - log r with r = q / p (unbiased, always >= 0, lower variance).
    http://joschu.net/blog/kl-approx.html
    """
    log_ratio = logprobs - ref_logprobs  # log p/q
    if estimator == "k1":
        return log_ratio
    return torch.expm1(-log_ratio) + log_ratio  # (q/p - 1) - log(q/p)


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, eq. 2):
    beta <- beta * (1 + clip((KL - target) / target, -0.2, 0.2) * n_steps / horizon)."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + proportional_error * n_steps / self.horizon


def baseline(scores: torch.Tensor, kind: Literal["batch_mean", "none"]) -> torch.Tensor:
    """Scores (B,) less a baseline: the batch mean, as REINFORCE with a baseline (Williams 1992) and
    ReMax/RLOO do. A constant offset of the reward model then moves no advantage, whatever the value
    head has learnt so far."""
    return scores - scores.mean() if kind == "batch_mean" else scores


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token reward, (B, T): -kl_coef * KL on every token, plus the reward-model score (B,)
    on the last real token of each response."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(dim=1).long().clamp(min=1) - 1  # (B,) index of the last response token
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

    rewards, values, mask: (B, T). Returns (advantages, returns), both (B, T), zero where masked.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae * (mask[:, t + 1] if t + 1 < rewards.shape[1] else 0.0)
        advantages[:, t] = last_gae
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, https://arxiv.org/abs/1707.06347, eq. 7).
    Returns (loss, clip fraction)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float) -> torch.Tensor:
    """Clipped value loss, as in OpenAI's baselines PPO2 and TRL's PPOTrainer: 0.5 * max(unclipped, clipped)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped_values - returns) ** 2), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position, (B, T, V) -> (B, T)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)
