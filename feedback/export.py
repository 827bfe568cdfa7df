"""For product teams: feedback and interactions out of Kafka, as files and as summary figures.

Reads the topics from the beginning up to the time of the call (manual partition assignment: no
consumer group, nothing committed), deduplicates by event id, and applies
latest-wins to thumbs (one rating per user and response: the newest). Users forgotten by a `forget`
event on the topics are left out, whichever came first on the topic.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Literal

import structlog
from kafka import KafkaConsumer, TopicPartition

from feedback.events import (CorrectionEvent, ForgetEvent, InteractionEvent, PairwiseEvent, ThumbEvent, UnknownSchemaVersion,
                             latest_thumbs, parse_event)

log = structlog.get_logger(__name__)

ExportedEvent = InteractionEvent | ThumbEvent | PairwiseEvent | CorrectionEvent
KINDS = ("interaction", "thumb", "pairwise", "correction")


def read_events(bootstrap_servers: list[str], topics: list[str], *, since: datetime | None = None,
                until: datetime | None = None, kinds: Iterable[str] = KINDS,
                client_config: dict | None = None) -> Iterator[ExportedEvent]:
    """Every distinct event on `topics` (as of now) within [since, until) of the wanted kinds, less the
    events of forgotten users (held back until the read ends: a `forget` may come later on the topic)."""
    forgotten: set[str] = set()
    kept = []
    for event in _read(bootstrap_servers, topics, since=since, until=until, kinds={*kinds, "forget"},
                       client_config=client_config or {}):
        if isinstance(event, ForgetEvent):
            forgotten.add(event.user_id)
        else:
            kept.append(event)
    yield from (event for event in kept if event.user_id is None or event.user_id not in forgotten)


@contextmanager
def from_the_start(bootstrap_servers: list[str], topics: list[str], *, client_id: str = "rlhf-export",
                   client_config: dict | None = None) -> Iterator[tuple[KafkaConsumer, list[TopicPartition]]]:
    """A consumer on every partition of `topics`, at the beginning (assigned: no group, no commits)."""
    login = {k: v for k, v in (client_config or {}).items() if k != "bootstrap_servers"}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, client_id=client_id, **login)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if partitions:
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        consumer.close()


def _read(bootstrap_servers: list[str], topics: list[str], *, since: datetime | None, until: datetime | None,
          kinds: set[str], client_config: dict) -> Iterator[ExportedEvent | ForgetEvent]:
    with from_the_start(bootstrap_servers, topics, client_config=client_config) as (consumer, partitions):
        if not partitions:
            return
        started_ms = time.time() * 1000
        ends = consumer.end_offsets(partitions)
        seen: set[str] = set()
        # Done when each partition reached the end it had at the start and a poll came back empty,
        # or showed a record newer than the start. End offsets alone are not trusted: a broker that
        # counts a multi-record batch as one offset (Tansu does) would cut the read short.
        while True:
            batches = consumer.poll(timeout_ms=1500)
            for tp, batch in batches.items():
                for record in batch:
                    if record.timestamp > started_ms:
                        consumer.pause(tp)
                        break
                    event = _parse(record)
                    if event is None or event.event_id in seen or event.event_type not in kinds:
                        continue
                    if event.event_type != "forget" and ((since and event.occurred_at < since) or (until and event.occurred_at >= until)):
                        continue
                    seen.add(event.event_id)
                    yield event
            active = [tp for tp in partitions if tp not in consumer.paused()]
            if not active or (not batches and all(consumer.position(tp) >= ends[tp] for tp in active)):
                return


def _parse(record) -> ExportedEvent | None:
    try:
        return parse_event(record.value)
    except (UnknownSchemaVersion, ValueError) as error:
        log.warning("export.skipped", topic=record.topic, offset=record.offset, reason=str(error))
        return None


def write(events: Iterable[ExportedEvent], path: Path, fmt: Literal["jsonl", "parquet"]) -> int:
    rows = [event.model_dump(mode="json") for event in events]
    if fmt == "jsonl":
        with open(path, "w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        return len(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    # nested fields (messages, sampling, timings, reasons) as JSON text: one schema for every kind
    flat = [{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()} for row in rows]
    pq.write_table(pa.Table.from_pylist(flat), path)
    return len(rows)


@dataclass
class Stats:
    counts: dict[str, int] = field(default_factory=dict)
    thumbs_by_adapter: dict[str, dict[str, float]] = field(default_factory=dict)
    pairwise: list[dict[str, object]] = field(default_factory=list)


def summarize(events: Iterable[ExportedEvent]) -> Stats:
    events = list(events)
    stats = Stats(counts=dict(Counter(e.event_type for e in events)))
    ups: dict[str, Counter] = defaultdict(Counter)
    for thumb in latest_thumbs(events):
        ups[thumb.adapter_version or "base"][thumb.rating] += 1
    stats.thumbs_by_adapter = {
        version: {"up": c["up"], "down": c["down"], "up_rate": c["up"] / (c["up"] + c["down"])}
        for version, c in sorted(ups.items())
    }
    duels: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for event in events:
        if isinstance(event, PairwiseEvent):
            a, b = event.adapter_version_a or "base", event.adapter_version_b or "base"
            outcome = {"a": "a_wins", "b": "b_wins"}.get(event.choice, event.choice)
            if (b, a) in duels:  # count (x vs y) and (y vs x) as one pairing
                a, b = b, a
                outcome = {"a_wins": "b_wins", "b_wins": "a_wins"}.get(outcome, outcome)
            duels[(a, b)][outcome] += 1
    for (a, b), c in sorted(duels.items()):
        decided = c["a_wins"] + c["b_wins"]
        stats.pairwise.append({
            "a": a, "b": b, "a_wins": c["a_wins"], "b_wins": c["b_wins"], "tie": c["tie"], "both_bad": c["both_bad"],
            "a_win_rate": c["a_wins"] / decided if decided else None,
        })
    return stats
