"""SFT from corrections: its loss against a hand computation (TRL's completion-only cross-entropy); on
the real model, a few steps on users' corrections (answers that follow a hidden rule) make the policy
prefer held-out answers that follow it, significantly, and its own answers stay within the KL budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from learner.config import SFTConfig
from learner.dataset import Demonstration, FeedbackData
from learner.reward_model import heldout
from learner.sft import SFTTrainer, sft_loss
from tests.helpers import held_out_preference, sampled_kl, synthetic


def test_sft_loss_is_the_mean_negative_log_likelihood_of_the_answer_tokens() -> None:
    logprobs = torch.tensor([[math.log(0.5), math.log(0.25), -9.0], [math.log(0.125), -7.0, -8.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # -9, -7 and -8 sit on padding
    # three real tokens: (log 2 + log 4 + log 8) / 3 = 2 log 2
    assert torch.allclose(sft_loss(logprobs, mask), torch.tensor(2 * math.log(2.0)))
    # a token-level mean: a long answer weighs by its tokens, as TRL's SFTTrainer averages over the batch
    assert torch.allclose(sft_loss(logprobs[:1], mask[:1]), torch.tensor(1.5 * math.log(2.0)))


def test_sft_learns_from_corrections_only() -> None:
    pairs, thumbs = synthetic(seed=1, count=8)
    data = FeedbackData(pointwise=thumbs, pairs=pairs)
    assert SFTTrainer.examples(data) == []  # thumbs and duels are not demonstrations
    data.demonstrations = [Demonstration(p.prompt, p.chosen, p.user_id) for p in pairs]
    assert [d.answer for d in SFTTrainer.examples(data)] == [p.chosen for p in pairs]


@pytest.mark.slow
def test_sft_on_corrections_prefers_held_out_answers_like_them(prepared_model: Path, rollouts, tmp_path: Path) -> None:
    pairs, _ = synthetic(seed=6, count=80)
    corrections = [Demonstration(p.prompt, p.chosen, p.user_id) for p in pairs if not heldout(p, 0.25)]
    test = [p for p in pairs if heldout(p, 0.25)][:16]
    trainer = SFTTrainer(prepared_model, tmp_path / "run", SFTConfig(steps=6, batch_size=8, learning_rate=1e-3))
    history = trainer.train(FeedbackData(demonstrations=corrections))
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]

    p_value, _ = held_out_preference(trainer, test)
    assert p_value < 0.01, p_value
    kl = sampled_kl(trainer, rollouts, tmp_path / "eval")  # its own answers stay within the KL gate's budget
    assert 0.0 <= kl < 12.0, kl
