"""RLOO: its advantage against a hand computation and TRL's formula; on the real model with vLLM
rollouts, a few steps raise the reward model's score of held-out answers within the KL budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.config import RLOOConfig
from learner.rloo import RLOOTrainer, leave_one_out_advantages, sequence_rewards
from tests.helpers import HELD_OUT_MAX_TOKENS, LEARNER_TRAIN, assert_held_out_reward_rises_within_kl


def test_leave_one_out_advantage_is_reward_less_the_mean_of_the_others() -> None:
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3, grouped
    # prompt 1: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5; prompt 2: -1.5, -1.5, 3
    assert leave_one_out_advantages(rewards, 3).tolist() == [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]
    # TRL's RLOOTrainer lays the k answers out as k blocks of every prompt (queries.repeat(rloo_k, 1)):
    # rlhf_reward.reshape(rloo_k, -1); baseline = (sum(0) - rlhf_reward) / (rloo_k - 1)
    torch.manual_seed(0)
    grouped = torch.randn(5 * 4)  # 5 prompts, k = 4, ours: prompt-major
    trl_layout = grouped.view(5, 4).T.reshape(4, -1)
    trl = (trl_layout - (trl_layout.sum(0) - trl_layout) / (4 - 1)).T.flatten()
    assert torch.allclose(leave_one_out_advantages(grouped, 4), trl)
    # a constant added to every reward (a reward model's offset) moves no advantage
    assert torch.allclose(leave_one_out_advantages(grouped + 7.0, 4), leave_one_out_advantages(grouped, 4), atol=1e-5)


def test_sequence_reward_is_score_less_the_penalised_kl_of_real_tokens() -> None:
    scores = torch.tensor([1.0, -0.5])
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.3, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # the 9.0 sits on padding
    assert torch.allclose(sequence_rewards(scores, kl, mask, 0.5), torch.tensor([1.0 - 0.15, -0.5 - 0.15]))


# 3 steps of 4 prompts x 4 answers, two passes of two minibatches each
CONFIG = RLOOConfig(steps=3, batch_size=4, samples_per_prompt=4, minibatch_size=8, ppo_epochs=2,
                    max_new_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0, learning_rate=1e-3, kl_coef=0.05, kl_target=12.0)


@pytest.mark.slow
def test_rloo_raises_held_out_reward_within_kl_budget(prepared_model: Path, rule_scorer, rollouts,
                                                      base_held_out_scores, tmp_path: Path) -> None:
    trainer = RLOOTrainer(prepared_model, tmp_path / "run", CONFIG, lambda p, t: rule_scorer.score(p, t), rollouts=rollouts)
    assert trainer.policy.value_head is None  # critic-free
    history = trainer.train(LEARNER_TRAIN)
    assert [row["step"] for row in history] == [1, 2, 3] and "loss/value" not in history[-1]
    # the reward model's score of held-out answers rises, beyond the noise of sampling them, within budget
    assert_held_out_reward_rises_within_kl(trainer, rollouts, rule_scorer, base_held_out_scores, tmp_path / "eval",
                                           CONFIG.kl_target)
