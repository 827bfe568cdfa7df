"""Stream to training data, on a real store: latest wins for everyone (an anonymous answer's replays
replace), anonymous feedback is capped as one pool, and pairs crossed from thumbs stay bounded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from feedback.events import InteractionEvent, ThumbEvent, Timings
from feedback.export import summarize
from learner import dataset
from learner.ingest import EventStore
from tests.learner.test_ingest import record

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def answer(i: int, prompt: str = "How do I boil an egg?") -> InteractionEvent:
    return InteractionEvent(response_id=f"r{i}:0", conversation_id=f"c{i}", user_id=None, model="m", adapter_version=None,
                            messages=[{"role": "user", "content": prompt}], response=f"answer {i}", finish_reason="stop",
                            sampling={}, prompt_tokens=5, completion_tokens=2, timings=Timings(time_to_first_token_s=0.1, total_s=0.2),
                            occurred_at=START)


def thumb(i: int, rating: str, minute: int, user: str | None = None) -> ThumbEvent:
    return ThumbEvent(conversation_id=f"c{i}", response_id=f"r{i}:0", adapter_version=None, user_id=user, rating=rating,
                      occurred_at=START + timedelta(minutes=minute))


def stored(tmp_path: Path, events: list) -> EventStore:
    store = EventStore(tmp_path / "events.sqlite")
    store.store([record(event.to_wire(), offset) for offset, event in enumerate(events)])
    return store


def test_fifteen_replays_of_one_anonymous_thumb_are_one_rating_the_last(tmp_path: Path) -> None:
    replays = [thumb(0, "up" if i % 2 else "down", minute=i) for i in range(15)]  # down, up, ..., down
    store = stored(tmp_path, [answer(0), *replays])
    data = dataset.build(store, max_per_user=200, max_wait_s=3600, now=START + timedelta(hours=1))
    assert [(p.response, p.label) for p in data.pointwise] == [("answer 0", 0.0)]
    assert data.pairs == []
    assert summarize(replays).thumbs_by_adapter == {"base": {"up": 0, "down": 1, "up_rate": 0.0}}


def test_anonymous_feedback_is_capped_as_one_pool(tmp_path: Path) -> None:
    answers = [answer(i, prompt=f"question {i}") for i in range(30)]
    store = stored(tmp_path, [*answers, *(thumb(i, "up", minute=i) for i in range(30))])
    data = dataset.build(store, max_per_user=10, max_wait_s=3600, now=START + timedelta(hours=1))
    assert len(data.pointwise) == 10 and data.capped == 20
    assert {p.response for p in data.pointwise} == {f"answer {i}" for i in range(20, 30)}  # the newest


def test_a_thousand_opposite_thumbs_on_one_prompt_give_a_bounded_number_of_pairs(tmp_path: Path) -> None:
    answers = [answer(i) for i in range(1000)]
    thumbs = [thumb(i, "up" if i % 2 else "down", minute=i, user=f"user-{i}") for i in range(1000)]
    store = stored(tmp_path, [*answers, *thumbs])
    data = dataset.build(store, max_per_user=200, max_wait_s=3600, now=START + timedelta(days=1))
    assert len(data.pointwise) == 1000
    assert len(data.pairs) == dataset.CROSSED_PER_SIDE ** 2 == 64  # not 500 x 500
    newest_ups = {f"answer {i}" for i in range(999, 983, -2)}
    assert {p.chosen for p in data.pairs} == newest_ups
