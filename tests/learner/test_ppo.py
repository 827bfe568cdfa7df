"""PPO on the real model with vLLM rollouts: the reward model's score goes up on held-out prompts,
the KL to the reference stays under budget, and a killed run resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.config import PPOConfig
from learner.ppo import PPOTrainer
from tests.helpers import HELD_OUT_MAX_TOKENS, LEARNER_TRAIN, assert_held_out_reward_rises_within_kl

pytestmark = pytest.mark.slow

# the KL budget of this run: 12 nats per answer of up to 40 tokens (0.3 nats a token): the policy
# may move, but only so far from the base model
CONFIG = PPOConfig(steps=3, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0,
                   learning_rate=1e-3, kl_coef=0.05, kl_target=12.0, checkpoint_every=1)


def test_ppo_raises_held_out_reward_within_kl_budget_and_resumes(prepared_model: Path, rule_scorer, rollouts,
                                                                 base_held_out_scores, tmp_path: Path) -> None:
    score = lambda prompts, texts: rule_scorer.score(prompts, texts)  # noqa: E731

    first = PPOTrainer(prepared_model, tmp_path / "run", CONFIG.model_copy(update={"steps": 2}), score, rollouts=rollouts)
    first.train(LEARNER_TRAIN)
    assert first.step == 2 and (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    del first  # "killed" after step 2: only the checkpoint remains

    resumed = PPOTrainer(prepared_model, tmp_path / "run", CONFIG, score, rollouts=rollouts)
    assert resumed.step == 2 and len(resumed.history) == 2
    history = resumed.train(LEARNER_TRAIN)
    assert [row["step"] for row in history] == list(range(1, CONFIG.steps + 1))
    for key in ("objective/scores", "objective/kl", "objective/entropy", "policy/clipfrac", "loss/value",
                "time/rollout_s", "time/scoring_s", "time/update_s"):
        assert key in history[-1]

    # the reward model's score of held-out answers rises, beyond the noise of sampling them, within budget
    assert_held_out_reward_rises_within_kl(resumed, rollouts, rule_scorer, base_held_out_scores, tmp_path / "eval",
                                           CONFIG.kl_target)
