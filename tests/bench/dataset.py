"""The dataset at scale: 1,000,000 synthetic events in the learner's store (600k interactions, 300k
thumbs, 100k duels from 5,000 users over 30 days), then the timings that run on it: a cycle's
dataset (all stored feedback, and a 7-day window), the promotion check on a canary that has run for
an hour of the traffic (with the live content check's answers), the dashboard's 24-hour statistics, the counters the
learner reads every poll, and forgetting one user. The peer, in the same run on the same store: the
build as it was before the indexes (every stored event read and parsed, oldest first). Writes
bench/results/dataset.json.

    python -m tests.bench.dataset [--events 1000000] [--work-dir DIR]

Events go in through the store's own SQL (indexes and counting triggers included) in batches, as
ingest writes them, with payloads built from the event models' JSON; only the per-record pydantic
validation of ingest is skipped to fill the store in a minute.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.progress import track

from feedback.events import InteractionEvent, PairwiseEvent, ThumbEvent, Timings, parse_event
from learner import dataset, promotion
from learner.store import EventStore
from learner.registry import Registry
from learner.settings import LearnerSettings
from tests.bench.common import write_result

# the synthetic timeline ends an hour from now: the canary starts now, so the check sees an hour of traffic
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
DAYS = 30


def templates() -> dict[str, str]:
    """One payload of each kind with placeholders: formatting beats a million model dumps."""
    at = "2000-01-01T00:00:00+00:00"
    interaction = InteractionEvent(event_id="@ID", occurred_at=at, response_id="@RID", conversation_id="@CID", user_id="@USER",
                                   model="rlhf-loop", adapter_version="@VERSION", messages=[{"role": "user", "content": "@PROMPT"}],
                                   response="An answer of a few words to the question asked.", finish_reason="stop",
                                   sampling={"max_tokens": 256, "temperature": 0.7}, prompt_tokens=12, completion_tokens=24,
                                   timings=Timings(time_to_first_token_s=0.05, total_s=0.4))
    thumb = ThumbEvent(event_id="@ID", occurred_at=at, conversation_id="@CID", response_id="@RID", adapter_version="@VERSION",
                       user_id="@USER", rating="up")
    duel = PairwiseEvent(event_id="@ID", occurred_at=at, conversation_id="@CID", response_id_a="@RID", response_id_b="@RIDB",
                         adapter_version_a="@VERSION", adapter_version_b="@VERSION", user_id="@USER", choice="a")
    return {kind: event.model_dump_json().replace(at.replace("+00:00", "Z"), "@AT").replace(at, "@AT")
            for kind, event in (("interaction", interaction), ("thumb", thumb), ("pairwise", duel))}


def fill(store: EventStore, events: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    shapes = templates()
    interactions = int(events * 0.6)
    thumbs = int(events * 0.3)
    duels = events - interactions - thumbs
    span = DAYS * 86400

    def when(i: int, total: int) -> str:  # spread evenly over the 30 days, oldest first
        return (NOW - timedelta(seconds=span * (1 - i / total))).isoformat()

    def payload(kind: str, **fields: str) -> str:
        text = shapes[kind]
        for name, value in fields.items():
            text = text.replace(f"@{name}", value)
        return text
    batch: list[tuple] = []

    def flush() -> None:
        with store.db:
            store.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, 'bench', 0, 0)", batch)
        batch.clear()
    for i in track(range(interactions), description="interactions"):
        at = when(i, interactions)
        batch.append((f"i{i}", "interaction", at, payload("interaction", ID=f"i{i}", AT=at, RID=f"r{i}:0", CID=f"c{i}",
                                                           USER=f"user-{i % 5000}", VERSION=f"v{1 + i * 8 // interactions:04d}",
                                                           PROMPT=f"question {rng.randrange(20000)}")))
        if len(batch) >= 5000:
            flush()
    for i in track(range(thumbs), description="thumbs"):
        target = min(interactions - 1, int(i * interactions / thumbs) + rng.randrange(3))
        at = when(target, interactions)
        batch.append((f"t{i}", "thumb", at, payload("thumb", ID=f"t{i}", AT=at, RID=f"r{target}:0", CID=f"c{target}",
                                                   USER=f"user-{target % 5000}", VERSION="v0001")))
        if len(batch) >= 5000:
            flush()
    for i in track(range(duels), description="duels"):
        target = min(interactions - 2, int(i * interactions / duels))
        at = when(target, interactions)
        batch.append((f"p{i}", "pairwise", at, payload("pairwise", ID=f"p{i}", AT=at, RIDB=f"r{target + 1}:0", RID=f"r{target}:0",
                                                      CID=f"c{target}", USER=f"user-{target % 5000}", VERSION="v0001")))
        if len(batch) >= 5000:
            flush()
    flush()


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rlhf-dataset-"))
    store = EventStore(work / "events.sqlite")
    fill_s, _ = timed(lambda: fill(store, args.events))
    store.close()
    store = EventStore(work / "events.sqlite")  # as the learner opens it

    settings = LearnerSettings(_env_file=None, home=work / "home")
    registry = Registry(work / "registry")
    adapter = work / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    for _ in range(2):
        registry.publish(adapter, {}, {"passed": True, "gates": []})
    registry.promote("v0001", actor="bench", reason="start")
    registry.canary("v0002", 0.1, actor="learner", reason="bench")

    count_s, counts = timed(lambda: (store.count(), store.count("thumb") + store.count("pairwise")))
    build_s, data = timed(lambda: dataset.build(store, max_per_user=settings.max_examples_per_user,
                                                max_wait_s=settings.max_feedback_wait_s, now=NOW))
    window_s, windowed = timed(lambda: dataset.build(store, max_per_user=settings.max_examples_per_user,
                                                     max_wait_s=settings.max_feedback_wait_s, now=NOW, window_s=7 * 86400))
    check_s, decision = timed(lambda: promotion.check(
        registry, lambda since, until: store.events(("thumb", "pairwise"), since, until), settings,
        lambda since, until: store.events(("interaction",), since, until)))
    stats_s, _ = timed(lambda: promotion.dashboard_stats(store.events(("thumb", "pairwise"), NOW - timedelta(hours=24)), NOW))
    def previous_build() -> dataset.FeedbackData:  # the peer: every stored event read and parsed, then joined
        interactions, feedback = {}, []
        for (payload,) in store.db.execute("SELECT payload FROM events ORDER BY occurred_at"):
            event = parse_event(payload.encode())
            if isinstance(event, InteractionEvent):
                interactions[event.response_id] = event
            else:
                feedback.append(event)
        prompts = {tuple((m["role"], m["content"]) for m in i.messages) for i in interactions.values()}
        return dataset.assemble(feedback, interactions, prompts, max_per_user=settings.max_examples_per_user,
                                max_wait_s=settings.max_feedback_wait_s, now=NOW, newest_event_at=None)
    scan_s, previous = timed(previous_build)
    assert (len(previous.pairs), len(previous.pointwise)) == (len(data.pairs), len(data.pointwise))  # the same data
    forget_s, forgotten = timed(lambda: store.forget("user-42"))
    path = write_result("dataset", {
        "events": counts[0], "feedback_events": counts[1], "days": DAYS,
        "fill_s": round(fill_s, 1),
        "counters_s": round(count_s, 4),
        "build_all_s": round(build_s, 2), "build_all": {"pairs": len(data.pairs), "thumbs": len(data.pointwise),
                                                        "prompts": len(data.prompts), "capped": data.capped},
        "peer_previous_build_s": round(scan_s, 2), "ratio_previous_over_ours": round(scan_s / build_s, 2),
        "build_7_days_s": round(window_s, 2), "build_7_days": {"pairs": len(windowed.pairs), "thumbs": len(windowed.pointwise)},
        "promotion_check_s": round(check_s, 3), "promotion_decision": decision.action if decision else None,
        "dashboard_stats_24h_s": round(stats_s, 3),
        "forget_one_user_s": round(forget_s, 3), "forgotten_events": forgotten,
        "targets": {"build_all_s": "< 30", "promotion_check_s": "< 1"},
    })
    print(json.dumps(json.loads(path.read_text()), indent=2))


if __name__ == "__main__":
    main()
