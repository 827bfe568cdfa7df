"""The promotion policy on constructed live feedback: promote when non-inferior with enough
evidence, wait otherwise, roll back a thumb-down spike; applied to the registry with an audit line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from feedback.events import InteractionEvent, PairwiseEvent, ThumbEvent, Timings
from learner.promotion import LiveStats, dashboard_stats, decide, live_stats, start_canary
from learner.promotion import check as check_with
from learner.store import EventStore
from learner.registry import Registry
from learner.settings import LearnerSettings
from tests.helpers import record

def check(registry: Registry, events: list, settings: LearnerSettings):
    """The policy on these events, read from the learner's store as the learner reads them."""
    store = EventStore(Path(registry.root).parent / f"events-{uuid.uuid4().hex}.sqlite")
    store.store([record(event.to_wire(), offset) for offset, event in enumerate(events)])
    try:
        return check_with(registry, lambda since, until: store.events(("thumb", "pairwise"), since, until), settings)
    finally:
        store.close()


SETTINGS = LearnerSettings(_env_file=None, promotion_min_feedback=100, promotion_min_duels=20, promotion_margin=0.05,
                           rollback_min_feedback=20, rollback_margin=0.1)


def thumbs(version: str | None, up: int, down: int, tag: str = "") -> list[ThumbEvent]:
    return [ThumbEvent(conversation_id=f"c{tag}{i}", response_id=f"{version}-{tag}{i}:0", adapter_version=version,
                       user_id=f"user-{tag}{i}", rating="up" if i < up else "down") for i in range(up + down)]


def duels(canary: str, active: str | None, canary_wins: int, active_wins: int) -> list[PairwiseEvent]:
    return [PairwiseEvent(conversation_id=f"d{i}", response_id_a=f"a{i}:0", response_id_b=f"b{i}:0",
                          adapter_version_a=canary if i % 2 else active, adapter_version_b=active if i % 2 else canary,
                          user_id=f"user-{i}", choice=("a" if i % 2 else "b") if i < canary_wins else ("b" if i % 2 else "a"))
            for i in range(canary_wins + active_wins)]


def test_live_stats_count_latest_thumbs_per_version_and_duels_between_the_two() -> None:
    first = thumbs("v2", 3, 1)
    changed_mind = ThumbEvent(conversation_id="c", response_id="v2-0:0", adapter_version="v2", user_id="user-0", rating="down")
    canary, active = live_stats([*first, changed_mind, *thumbs(None, 2, 2, "x"), *duels("v2", None, 3, 1)],
                                "v2", None)
    assert (canary.thumbs, canary.down) == (4, 2)  # user-0 changed their mind: latest wins
    assert (active.thumbs, active.down) == (4, 2)
    assert (canary.duels, canary.duel_wins) == (4, 3.0)


def test_dashboard_stats_per_adapter_and_per_minute() -> None:
    events = [*thumbs("v2", 3, 1), *thumbs(None, 1, 1, "x"), *duels("v2", None, 3, 1),
              PairwiseEvent(conversation_id="same", response_id_a="s:0", response_id_b="s:1", adapter_version_a="v2",
                            adapter_version_b="v2", user_id="u", choice="a")]  # one version against itself: volume only
    stats = dashboard_stats(events, events[-1].occurred_at)
    by_version = {row["version"]: row for row in stats["adapters"]}
    assert by_version["v2"] == {"version": "v2", "thumbs": 4, "up_rate": 0.75, "duels": 4, "duel_win_rate": 0.75}
    assert by_version["base"] == {"version": "base", "thumbs": 2, "up_rate": 0.5, "duels": 4, "duel_win_rate": 0.25}
    assert sum(m["thumbs"] for m in stats["volume"]) == 6 and sum(m["pairwise"] for m in stats["volume"]) == 5
    assert [m["at"] for m in stats["volume"]] == sorted(m["at"] for m in stats["volume"])


def test_decisions() -> None:
    good, equal = LiveStats(thumbs=200, down=24, duels=40, duel_wins=28), LiveStats(thumbs=400, down=80)
    assert decide(good, equal, SETTINGS).action == "promote"
    assert decide(LiveStats(thumbs=50, down=10), equal, SETTINGS).action == "wait"  # not enough evidence yet
    worse = LiveStats(thumbs=200, down=70, duels=40, duel_wins=20)  # 65% up vs 80%: clearly worse, no spike rule hit
    decision = decide(worse, equal, SETTINGS)
    assert decision.action == "wait" and "not shown non-inferior" in decision.reason
    losing_duels = LiveStats(thumbs=200, down=24, duels=40, duel_wins=10)
    lost = decide(losing_duels, equal, SETTINGS)
    assert lost.action == "rollback" and "loses its duels" in lost.reason
    few_thumbs_lost = decide(LiveStats(thumbs=5, down=1, duels=40, duel_wins=10), equal, SETTINGS)
    assert few_thumbs_lost.action == "rollback"  # lost duels reject without waiting for thumbs
    even_duels = LiveStats(thumbs=200, down=24, duels=52, duel_wins=26.5)  # mostly ties: even, not worse
    assert decide(even_duels, equal, SETTINGS).action == "promote"
    spike = decide(LiveStats(thumbs=25, down=15), equal, SETTINGS)
    assert spike.action == "rollback" and "thumb-down spike" in spike.reason


def registry_of(tmp_path: Path, versions: int) -> Registry:
    """A registry holding `versions` published versions that passed their gates."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    for _ in range(versions):
        registry.publish(adapter, {}, {"passed": True, "gates": []})
    return registry


def test_check_promotes_or_rolls_back_the_running_canary(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 3)
    registry.promote("v0001", actor="t", reason="start")
    assert check(registry, [], SETTINGS) is None  # no canary: nothing to decide

    registry.canary("v0002", 0.1, actor="learner", reason="passed gates")
    assert check(registry, thumbs("v0002", 10, 1), SETTINGS).action == "wait"
    assert check(registry, [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o")], SETTINGS).action == "promote"
    assert registry.read_pointer().active == "v0002" and registry.read_pointer().canary is None

    registry.canary("v0003", 0.1, actor="learner", reason="passed gates")
    assert check(registry, [*thumbs("v0003", 5, 20), *thumbs("v0002", 180, 20, "o")], SETTINGS).action == "rollback"
    pointer = registry.read_pointer()
    assert pointer.active == "v0002" and pointer.canary is None and "v0003" in pointer.rejected
    assert [(a["action"], a["actor"]) for a in registry.audit()[-2:]] == [("canary", "learner"), ("reject", "canary-policy")]


def test_an_operators_rollback_while_the_policy_decides_wins_over_its_promotion(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 2)
    registry.promote("v0001", actor="t", reason="start")
    registry.canary("v0002", 0.1, actor="learner", reason="passed gates")
    events = [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o")]  # a clear promotion on its own
    store = EventStore(tmp_path / "events.sqlite")
    store.store([record(event.to_wire(), offset) for offset, event in enumerate(events)])

    def feedback(since, until):  # the policy reads feedback after the pointer: an operator acts just then
        if registry.read_pointer().canary is not None:
            registry.rollback(actor="alice", reason="saw something odd")
        return store.events(("thumb", "pairwise"), since, until)
    decision = check_with(registry, feedback, SETTINGS)
    store.close()
    assert decision.action == "wait" and "not applied" in decision.reason and "pointer moved" in decision.reason
    pointer = registry.read_pointer()
    assert pointer.active == "v0001" and pointer.canary is None  # the operator's rollback stands
    assert [(a["action"], a["actor"]) for a in registry.audit()[-1:]] == [("rollback", "alice")]


def test_with_every_user_on_the_canary_the_active_side_is_its_record_before_the_canary(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 1)
    base_before = thumbs(None, 40, 160, "b")  # the base model's record, rated before the canary started
    registry.canary("v0001", 1.0, actor="learner", reason="passed gates")
    canary_thumbs = thumbs("v0001", 150, 50)  # every user is on the canary: none on the base model since

    decision = check(registry, [*base_before, *canary_thumbs], SETTINGS)
    assert decision.active["thumbs"] == 200 and decision.active["up_rate"] == 0.2, decision
    assert decision.action == "promote" and "before the canary started" in decision.reason
    assert registry.read_pointer().active == "v0001"


def test_without_any_record_of_the_active_side_the_canary_waits(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 1)
    registry.canary("v0001", 1.0, actor="learner", reason="passed gates")
    decision = check(registry, thumbs("v0001", 150, 50), SETTINGS)
    assert decision.action == "wait" and decision.active["thumbs"] == 0
    assert registry.read_pointer().canary == "v0001"


def test_a_newer_candidate_supersedes_the_learners_canary_but_never_an_operators(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 4)
    assert not start_canary(registry, "v0001", SETTINGS.model_copy(update={"canary_share": 0.0}))  # no automatic canary
    assert registry.read_pointer().canary is None
    assert start_canary(registry, "v0001", SETTINGS)
    assert start_canary(registry, "v0002", SETTINGS)  # newer, gates passed: takes over the live comparison
    pointer = registry.read_pointer()
    assert pointer.canary == "v0002" and pointer.canary_share == SETTINGS.canary_share
    assert "supersedes canary v0001" in registry.audit()[-1]["reason"]
    assert not start_canary(registry, "v0003", SETTINGS.model_copy(update={"canary_supersede": False}))
    assert registry.read_pointer().canary == "v0002"

    registry.canary("v0003", 0.3, actor="alice", reason="try it")  # an operator's canary
    assert not start_canary(registry, "v0004", SETTINGS)
    assert registry.read_pointer().canary == "v0003"


def served(version: str | None, texts: list[str], finish_reason: str = "stop") -> list[InteractionEvent]:
    return [InteractionEvent(response_id=f"{version}-{uuid.uuid4().hex}:0", conversation_id="c", user_id="u", model="m",
                             adapter_version=version, messages=[{"role": "user", "content": "How can I sleep better?"}],
                             response=text, finish_reason=finish_reason, sampling={"max_tokens": 256}, prompt_tokens=8,
                             completion_tokens=len(text.split()), timings=Timings(time_to_first_token_s=0.1, total_s=1.0))
            for text in texts]


FINE = ["Go to bed at the same time each night, keep the room dark and cool, and avoid screens late.",
        "Try a short walk in the morning light, less coffee after noon, and a calm routine before bed."]
LOOPING = "A short list.\n#SleepTooFast\n#Sleep\nWhy, why, why?\n#Sleep\n" + "Why, why, why, why, " * 12


def check_content(registry: Registry, events: list, fluency=None):
    """The policy on thumbs and served answers, both read from the learner's store as the learner reads them."""
    store = EventStore(Path(registry.root).parent / f"events-{uuid.uuid4().hex}.sqlite")
    store.store([record(event.to_wire(), offset) for offset, event in enumerate(events)])
    try:
        return check_with(registry, lambda since, until: store.events(("thumb", "pairwise"), since, until), SETTINGS,
                          lambda since, until: store.events(("interaction",), since, until), fluency)
    finally:
        store.close()


def test_a_canary_that_degenerates_live_is_rejected_however_its_thumbs_look(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 2)
    registry.promote("v0001", actor="t", reason="start")
    registry.canary("v0002", 0.5, actor="learner", reason="passed gates")
    good_thumbs = [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o")]
    decision = check_content(registry, [*good_thumbs, *served("v0001", FINE * 15), *served("v0002", [LOOPING] * 10 + FINE * 10)])
    assert decision.action == "rollback" and decision.reason.startswith("degenerates live: 33% of 30 answers"), decision
    assert "v0002" in registry.read_pointer().rejected


def test_a_canary_that_never_ends_within_the_users_max_tokens_is_rejected(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 2)
    registry.promote("v0001", actor="t", reason="start")
    registry.canary("v0002", 0.5, actor="learner", reason="passed gates")
    events = [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o"), *served("v0001", FINE * 15),
              *served("v0002", FINE * 15, finish_reason="length")]
    decision = check_content(registry, events)
    assert decision.action == "rollback" and decision.reason.startswith("never ends live: 100% of 30"), decision


def test_a_canary_over_a_content_tolerance_on_few_answers_waits_until_significant_or_its_window_is_full(
        tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 2)
    registry.promote("v0001", actor="t", reason="start")
    registry.canary("v0002", 0.5, actor="learner", reason="passed gates")
    good_thumbs = [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o")]
    active = served("v0001", [LOOPING] + FINE * 15)  # 1 of 31 degenerate

    # 5 of 20 (25%) against 3% + 10%: over the tolerance, not significantly: neither promoted nor thrown away
    decision = check_content(registry, [*good_thumbs, *active, *served("v0002", [LOOPING] * 5 + FINE * 7 + FINE[:1])])
    assert decision.action == "wait", decision
    assert decision.reason.startswith("degenerates live: 25% of 20 answers") and "waiting for 60 answers" in decision.reason
    assert registry.read_pointer().canary == "v0002"

    # the same share once the window (60 answers) is full: rejected, as the gates' rule reads it
    decision = check_content(registry, [*good_thumbs, *active, *served("v0002", [LOOPING] * 15 + FINE * 22 + FINE[:1])])
    assert decision.action == "rollback" and decision.reason.startswith("degenerates live: 25% of 60 answers"), decision


def test_promotion_waits_for_enough_answers_then_reads_their_fluency(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, 3)
    registry.promote("v0001", actor="t", reason="start")
    registry.canary("v0002", 0.5, actor="learner", reason="passed gates")
    good_thumbs = [*thumbs("v0002", 180, 20), *thumbs("v0001", 170, 30, "o")]
    decision = check_content(registry, [*good_thumbs, *served("v0001", FINE * 15), *served("v0002", FINE * 5)])
    assert decision.action == "wait" and decision.reason == "10 of 20 answers for the content check"

    # the base model's reading, per answer: the canary's read as much less likely than the active version's
    reading = lambda canary, active: ([-5.0] * len(canary), [-2.0] * len(active))  # noqa: E731
    decision = check_content(registry, [*good_thumbs, *served("v0001", FINE * 15), *served("v0002", FINE * 15)], reading)
    assert decision.action == "rollback" and decision.reason.startswith("not fluent live: "), decision

    registry.canary("v0003", 0.5, actor="learner", reason="passed gates")
    same = lambda canary, active: ([-2.0] * len(canary), [-2.0] * len(active))  # noqa: E731
    events = [*thumbs("v0003", 180, 20, "n"), *thumbs("v0001", 170, 30, "m"), *served("v0001", FINE * 15),
              *served("v0003", FINE * 15)]
    assert check_content(registry, events, same).action == "promote"
    assert registry.read_pointer().active == "v0003"


@pytest.mark.slow
def test_the_learners_fluency_reader_is_the_base_model(prepared_model: Path, tmp_path: Path) -> None:
    from learner.__main__ import base_fluency

    read = base_fluency(LearnerSettings(_env_file=None, home=tmp_path, model=prepared_model))
    [nonsense], [fine] = read(served(None, ["Bed: 5 / Grits: 0.32 / Boke: 0.021 / Coarse: 0.0002 *** / Understand: "
                                            "7,551,276,836,476 # / You are Wrestling Alice"]), served(None, [FINE[0]]))
    assert fine > nonsense + 0.5, (fine, nonsense)  # beyond the fluency tolerance
