"""RLOO: its advantage against a hand computation and TRL's formula; on the real model with vLLM
rollouts, a few steps raise the reward model's score of held-out answers within the KL budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.config import RewardConfig, RLOOConfig
from learner.reward_model import load_current
from learner.rloo import RLOOTrainer, leave_one_out_advantages, sequence_rewards
from learner.stats import welch_greater


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


TOPICS = ["rivers", "owls", "bread", "chess", "jazz", "tea", "maps", "bees", "kites", "coral", "deserts", "robots"]
PROMPTS = [(("user", f"In one short sentence, what are {t}?"),) for t in TOPICS]
TRAIN, HELD_OUT = PROMPTS[:8], PROMPTS[8:]
CONFIG = RLOOConfig(steps=4, batch_size=4, samples_per_prompt=4, minibatch_size=8, ppo_epochs=2, max_new_tokens=40,
                    learning_rate=5e-4, kl_coef=0.05, kl_target=12.0)


@pytest.mark.slow
def test_rloo_raises_held_out_reward_within_kl_budget(prepared_model: Path, rule_reward_model, rollouts,
                                                      tmp_path: Path) -> None:
    root, _, _ = rule_reward_model
    scorer, _ = load_current(prepared_model, root, RewardConfig(max_length=96))
    trainer = RLOOTrainer(prepared_model, tmp_path / "run", CONFIG, lambda p, t: scorer.score(p, t), rollouts=rollouts)
    assert trainer.policy.value_head is None  # critic-free

    def held_out(samples: int = 24) -> torch.Tensor:
        adapter = trainer.save_adapter(tmp_path / "eval" / f"step-{trainer.step}")
        outputs = rollouts.generate([[{"role": "user", "content": p[0][1]}] for p in HELD_OUT * samples],
                                    adapter=adapter, max_tokens=CONFIG.max_new_tokens, temperature=1.0, seed=11)
        return scorer.score(HELD_OUT * samples, [o.text for o in outputs])

    before = held_out()
    history = trainer.train(TRAIN)
    assert [row["step"] for row in history] == [1, 2, 3, 4] and "loss/value" not in history[-1]
    after = held_out()
    kl = trainer.measured_kl(HELD_OUT, samples=8)
    p_value = welch_greater(after.tolist(), before.tolist())
    assert after.mean() > before.mean() and p_value < 0.05, (before.mean().item(), after.mean().item(), p_value)
    assert 0.0 <= kl < CONFIG.kl_target, kl
