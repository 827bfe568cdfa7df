"""PPO on the real model with vLLM rollouts: the reward model's score goes up on held-out prompts,
the KL to the reference stays under budget, and a killed run resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.dataset import as_messages
from learner.config import PPOConfig, RewardConfig
from learner.ppo import PPOTrainer
from learner.reward_model import load_current
from learner.stats import welch_greater

pytestmark = pytest.mark.slow

TOPICS = ["rivers", "owls", "bread", "chess", "jazz", "tea", "maps", "bees", "kites", "coral", "deserts", "robots"]
# short answers end inside the token budget, so how an answer ends (the hidden rule) is learnable
PROMPTS = [(("user", f"In one short sentence, what are {t}?"),) for t in TOPICS]
TRAIN, HELD_OUT = PROMPTS[:8], PROMPTS[8:]
# the KL budget of this run: 12 nats per answer of up to 40 tokens (0.3 nats a token): the policy
# may move, but only so far from the base model
CONFIG = PPOConfig(steps=6, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=40, learning_rate=5e-4,
                   kl_coef=0.05, kl_target=12.0, checkpoint_every=1)


def held_out_scores(trainer: PPOTrainer, scorer, samples: int = 24) -> torch.Tensor:
    adapter = trainer.save_adapter(trainer.run_dir / "eval" / f"step-{trainer.step}")
    prompts = HELD_OUT * samples
    outputs = trainer.rollouts.generate([as_messages(p) for p in prompts], adapter=adapter,
                                        max_tokens=CONFIG.max_new_tokens,
                                        temperature=1.0, seed=11)
    return scorer.score(prompts, [o.text for o in outputs])


def test_ppo_raises_held_out_reward_within_kl_budget_and_resumes(prepared_model: Path, rule_reward_model, rollouts,
                                                                 tmp_path: Path) -> None:
    root, _, _ = rule_reward_model
    scorer, _ = load_current(prepared_model, root, RewardConfig(max_length=96))
    score = lambda prompts, texts: scorer.score(prompts, texts)  # noqa: E731

    first = PPOTrainer(prepared_model, tmp_path / "run", CONFIG.model_copy(update={"steps": 3}),
                       score, rollouts=rollouts)
    before = held_out_scores(first, scorer)
    first.train(TRAIN)
    assert first.step == 3 and (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    del first  # "killed" after step 3: only the checkpoint remains

    resumed = PPOTrainer(prepared_model, tmp_path / "run", CONFIG, score, rollouts=rollouts)
    assert resumed.step == 3 and len(resumed.history) == 3
    history = resumed.train(TRAIN)
    assert [row["step"] for row in history] == list(range(1, CONFIG.steps + 1))
    for key in ("objective/scores", "objective/kl", "objective/entropy", "policy/clipfrac", "loss/value",
                "time/rollout_s", "time/scoring_s", "time/update_s"):
        assert key in history[-1]

    after = held_out_scores(resumed, scorer)
    kl = resumed.measured_kl(HELD_OUT, samples=8)
    # the reward model's score of held-out answers rises, beyond the noise of sampling them
    p_value = welch_greater(after.tolist(), before.tolist())
    assert after.mean() > before.mean() and p_value < 0.05, (before.mean().item(), after.mean().item(), p_value)
    assert 0.0 <= kl < CONFIG.kl_target, kl
