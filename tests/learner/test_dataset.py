"""Stream to training data, on a real store: latest wins for everyone (an anonymous answer's replays
replace), anonymous feedback is capped as one pool, and pairs crossed from thumbs stay bounded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from feedback.events import InteractionEvent, ThumbEvent, Timings
from feedback.export import summarize
from learner import dataset
from learner.store import EventStore
from tests.helpers import record

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


def test_feedback_joins_its_interaction_waits_for_a_late_one_and_drops_a_lost_one(tmp_path: Path) -> None:
    """A rating whose interaction has not arrived (yet) is not trained on: counted `waiting` while it may
    still come (RLHF_MAX_FEEDBACK_WAIT_S), `dropped` after that; duels become pairs, ties order nothing."""
    from feedback.events import PairwiseEvent

    duel = [answer(7, prompt="Name a colour."), answer(8, prompt="Name a colour.")]
    choice = PairwiseEvent(conversation_id="c7", response_id_a="r7:0", response_id_b="r8:0", adapter_version_a=None,
                           adapter_version_b=None, user_id="ann", choice="b", occurred_at=START + timedelta(minutes=5))
    tie = choice.model_copy(update={"event_id": "tie", "choice": "tie", "occurred_at": START + timedelta(minutes=6)})
    lost, late = thumb(1, "up", minute=0), thumb(2, "down", minute=118)  # their interactions never came / not yet
    store = stored(tmp_path, [answer(0), thumb(0, "up", minute=1), *duel, choice, tie, lost, late])
    data = dataset.build(store, max_per_user=200, max_wait_s=3600, now=START + timedelta(minutes=120))
    assert [(p.response, p.label) for p in data.pointwise] == [("answer 0", 1.0)]
    assert (data.waiting, data.dropped) == (1, 1)
    assert [(p.chosen, p.rejected) for p in data.pairs] == [("answer 8", "answer 7")]


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


def test_a_cycle_reads_its_window_and_joins_older_interactions_by_index(tmp_path: Path) -> None:
    answers = [answer(i, prompt=f"question {i}") for i in range(4)]  # all at START
    old, recent = thumb(0, "up", minute=0), thumb(1, "down", minute=60 * 24 * 10)  # day 0 and day 10
    store = stored(tmp_path, [*answers, old, recent])
    now = START + timedelta(days=11)
    everything = dataset.build(store, max_per_user=200, max_wait_s=3600, now=now)
    assert sorted(p.response for p in everything.pointwise) == ["answer 0", "answer 1"]
    windowed = dataset.build(store, max_per_user=200, max_wait_s=3600, now=now, window_s=3 * 86400)
    assert [(p.response, p.label) for p in windowed.pointwise] == [("answer 1", 0.0)]  # its interaction is 10 days old
    assert len(windowed.prompts) == 4 and windowed.newest_event_at == recent.occurred_at
    assert (store.count(), store.count("interaction"), store.count("thumb")) == (6, 4, 2)


def test_a_forgotten_user_leaves_the_store_stays_out_and_retention_expires_old_events(tmp_path: Path) -> None:
    from feedback.events import ForgetEvent

    mine = answer(0).model_copy(update={"user_id": "alice"})
    store = stored(tmp_path, [mine, thumb(0, "up", minute=1, user="alice"), answer(1), thumb(1, "up", minute=2, user="bob")])
    assert store.count("thumb") == 2
    store.store([record(ForgetEvent(user_id="alice").to_wire(), 10)])
    late = thumb(0, "down", minute=3, user="alice")  # arriving after the forget (a replay, a slow replica)
    store.store([record(late.to_wire(), 11)])
    data = dataset.build(store, max_per_user=200, max_wait_s=3600, now=START + timedelta(hours=1))
    assert [p.user_id for p in data.pointwise] == ["bob"] and store.count("thumb") == 1 and store.count("interaction") == 1
    store.close()
    reopened = EventStore(tmp_path / "events.sqlite")  # the forget outlives a restart
    reopened.store([record(late.model_copy(update={"event_id": "another"}).to_wire(), 12)])
    assert reopened.count("thumb") == 1
    assert reopened.expire(START + timedelta(minutes=2)) == 1  # answer 1 (START) goes; bob's thumb (minute 2) stays
    assert (reopened.count("interaction"), reopened.count("thumb")) == (0, 1)


def test_an_offline_learner_without_its_kind_of_feedback_ends_the_cycle_with_a_reason(tmp_path: Path) -> None:
    """DPO learns from pairs: thumbs up alone give none, and the cycle says so before any training."""
    from learner.config import DPOConfig
    from learner.cycle import run_cycle
    from learner.dpo import DPOTrainer
    from learner.kto import KTOTrainer
    from learner.settings import LearnerSettings

    ups = [answer(0), answer(1, "Another question?"), thumb(0, "up", minute=1), thumb(1, "up", minute=2)]
    stored(tmp_path, ups).close()
    settings = LearnerSettings(_env_file=None, home=tmp_path, max_feedback_wait_s=1)
    (tmp_path / "learner").mkdir()
    (tmp_path / "events.sqlite").rename(settings.dataset_path)
    report = run_cycle(settings, DPOConfig(), settings.reward)
    assert report.candidate is None and report.reason == "no examples for dpo in the feedback yet"
    data = dataset.build(EventStore(settings.dataset_path), max_per_user=200, max_wait_s=3600)
    assert not DPOTrainer.examples(data) and len(KTOTrainer.examples(data)) == 2
    from learner.config import SFTConfig
    from learner.sft import SFTTrainer

    report = run_cycle(settings, SFTConfig(), settings.reward)  # thumbs are no demonstrations either
    assert report.candidate is None and report.reason == "no examples for sft in the feedback yet"
    assert not SFTTrainer.examples(data)


def test_every_algorithm_a_learner_may_be_set_to_has_its_trainer() -> None:
    import typing

    from learner.cycle import TRAINERS, trainer_name
    from learner.settings import LearnerSettings

    names = typing.get_args(LearnerSettings.model_fields["algorithm"].annotation)
    assert {"ppo", "rloo", "online_dpo", "dpo", "kto", "sft"} <= set(names)
    for name in names:
        policy = LearnerSettings(_env_file=None, algorithm=name).policy
        assert type(policy) in TRAINERS and trainer_name(policy) == name  # lineage records the name it was set by
