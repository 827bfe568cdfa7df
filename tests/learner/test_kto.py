"""Offline KTO: its loss against a hand computation (TRL's kto_loss); on the real model, a few steps
on logged thumbs of a hidden rule raise the held-out desirable answers over the undesirable ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from learner.config import KTOConfig
from learner.dataset import FeedbackData
from learner.kto import KTOTrainer, kto_loss
from learner.reward_model import heldout
from tests.helpers import held_out_preference, synthetic


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_weighs_each_answer_against_the_clamped_kl_estimate() -> None:
    losses, desirable, undesirable, kl = kto_loss(
        torch.tensor([-4.0]), torch.tensor([-6.0, -3.0]), torch.tensor([-10.0, -9.0]),
        torch.tensor([-5.0]), torch.tensor([-5.0, -5.0]), torch.tensor([-10.5, -9.5]),
        beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    assert kl.item() == pytest.approx(0.5)  # mean((-10 + 10.5), (-9 + 9.5))
    # desirable: ratio 1 -> 1 - sigmoid(0.5 (1 - 0.5)); undesirable: ratios -1, 2 -> 2 (1 - sigmoid(0.5 (0.5 - r)))
    expected = [1 - sigmoid(0.25), 2 * (1 - sigmoid(0.75)), 2 * (1 - sigmoid(-0.75))]
    assert losses.tolist() == pytest.approx(expected)
    assert desirable.tolist() == [0.5] and undesirable.tolist() == [-0.5, 1.0]
    # a negative KL estimate is clamped to 0
    _, _, _, clamped = kto_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-3.0]),
                                torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-1.0]), beta=0.1)
    assert clamped.item() == 0.0


@pytest.mark.slow
def test_kto_on_logged_thumbs_raises_desirable_over_undesirable(prepared_model: Path, tmp_path: Path) -> None:
    pairs, thumbs = synthetic(seed=6, count=80)
    train = [t for t in thumbs if not heldout(t, 0.25)]
    test = [p for p in pairs if heldout(p, 0.25)][:16]
    trainer = KTOTrainer(prepared_model, tmp_path / "run", KTOConfig(steps=6, batch_size=8, learning_rate=3e-4, beta=0.1))
    assert {t.label for t in train} == {0.0, 1.0}
    history = trainer.train(FeedbackData(pointwise=train))
    assert len(history) == 6

    p_value, moved = held_out_preference(trainer, test)
    assert p_value < 0.01, p_value
    assert moved < 12.0, moved  # moved, but not far: the answers' log-ratio to the reference stays small
