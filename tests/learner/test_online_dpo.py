"""Online DPO: each prompt's best and worst of k sampled answers, against a hand computation; on the
real model with vLLM rollouts, a few steps raise the reward model's score of held-out answers within the
KL budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.config import OnlineDPOConfig
from learner.online_dpo import OnlineDPOTrainer, best_and_worst
from tests.helpers import HELD_OUT_MAX_TOKENS, LEARNER_TRAIN, assert_held_out_reward_rises_within_kl


def test_each_prompts_best_and_worst_answer_form_its_pair_and_ties_teach_nothing() -> None:
    # three prompts, k = 3: prompt 2's answers tie, so it gives no pair
    scores = torch.tensor([0.1, 0.9, -0.4, 0.5, 0.5, 0.5, 2.0, 1.0, 3.0])
    chosen, rejected = best_and_worst(scores, 3)
    assert chosen.tolist() == [1, 8] and rejected.tolist() == [2, 7]
    assert best_and_worst(torch.zeros(6), 2)[0].numel() == 0


CONFIG = OnlineDPOConfig(steps=2, batch_size=4, samples_per_prompt=4, minibatch_size=4, ppo_epochs=2,
                         max_new_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0, learning_rate=2e-3, beta=0.5, kl_target=12.0)


@pytest.mark.slow
def test_online_dpo_raises_held_out_reward_within_kl_budget(prepared_model: Path, rule_scorer, rollouts,
                                                            base_held_out_scores, tmp_path: Path) -> None:
    trainer = OnlineDPOTrainer(prepared_model, tmp_path / "run", CONFIG, lambda p, t: rule_scorer.score(p, t),
                               rollouts=rollouts)
    history = trainer.train(LEARNER_TRAIN)
    assert [row["step"] for row in history] == [1, 2] and all(row["pairs"] > 0 for row in history)
    assert_held_out_reward_rises_within_kl(trainer, rollouts, rule_scorer, base_held_out_scores, tmp_path / "eval",
                                           CONFIG.kl_target)
