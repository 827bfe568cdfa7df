"""A reward-model refresh trains on what is new and a bounded replay of the rest: its cost does not grow
with all feedback ever received."""

from __future__ import annotations


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
