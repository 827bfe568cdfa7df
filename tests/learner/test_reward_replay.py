"""A reward-model refresh trains on what is new and a bounded replay of the rest: its cost does not grow
with all feedback ever received."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_refresh_replays_a_bounded_sample_of_what_it_already_trained_on() -> None:
    import random

    from learner.reward_model import _example_key, replay_sample
    from tests.helpers import synthetic

    pairs, _ = synthetic(seed=2, count=1000)
    seen = {_example_key(p) for p in pairs[:900]}  # 900 trained on by earlier refreshes, 100 new
    kept = replay_sample(pairs, seen, fraction=0.5, cap=64, rng=random.Random(0))
    assert set(pairs[900:]) <= set(kept)  # everything new
    assert len(kept) == 100 + 64  # half the old ones would be 450: the cap holds the cost
    assert kept == [p for p in pairs if p in set(kept)]  # in their order
    assert len(replay_sample(pairs[:100], {_example_key(p) for p in pairs[:100]}, 0.5, 64, random.Random(0))) == 50


def test_a_refresh_reads_at_most_its_step_budget_newest_first_then_replay() -> None:
    import random

    from learner.reward_model import _example_key, replay_sample
    from tests.helpers import synthetic

    pairs, _ = synthetic(seed=2, count=400)
    seen = {_example_key(p) for p in pairs[:100]}  # 100 trained on before, 300 new since (a slow cycle's backlog)
    kept = replay_sample(pairs, seen, fraction=0.5, cap=256, rng=random.Random(0), budget=64)
    assert kept == pairs[-64:]  # the newest new ones fill the budget: no replay
    kept = replay_sample(pairs[:120], seen, fraction=0.5, cap=256, rng=random.Random(0), budget=64)
    assert pairs[100:120] == [p for p in kept if _example_key(p) not in seen]  # all 20 new
    assert len(kept) == 64  # and replay up to the budget (half the old ones would be 50)


@pytest.mark.slow
def test_a_refresh_stops_at_max_steps_and_logs_only_what_it_trained_on(prepared_model: Path, tmp_path: Path) -> None:
    from learner.config import RewardConfig
    from learner.dataset import FeedbackData
    from learner.reward_model import _example_key, refresh
    from tests.helpers import synthetic

    pairs, thumbs = synthetic(seed=4, count=40)
    config = RewardConfig(epochs=3, batch_size=4, max_steps=2, max_length=32, heldout_fraction=0.25)
    report = refresh(prepared_model, tmp_path, FeedbackData(pointwise=thumbs, pairs=pairs), config)
    assert report.steps == 2 and report.train_pairs <= 8 and report.train_thumbs <= 8  # 3 epochs asked, 2 steps read
    logged = set((tmp_path / "trained.txt").read_text().split())
    assert len(logged) == report.train_pairs + report.train_thumbs
    assert logged <= {_example_key(e) for e in [*pairs, *thumbs]}
