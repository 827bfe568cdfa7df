"""Stream to durable store: every event of the interactions and feedback topics, exactly once.

Events are written to SQLite keyed by their event id, and offsets are committed to Kafka only
after the SQLite transaction is durable. A kill at any point loses nothing (uncommitted records
are read again) and double-counts nothing (a re-read, a producer retry or an outbox replay after
a broker restart carries the same event id and is ignored). A record of an unknown schema version
is not guessed at: it is logged, counted and kept aside in `rejected`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Iterable

import structlog
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from feedback.events import UnknownSchemaVersion, parse_event
from learner.settings import LearnerSettings

log = structlog.get_logger(__name__)

RECEIVED = Counter("rlhf_learner_events_received_total", "Valid events received (new or duplicate), by type.", ["event_type"])
DUPLICATES = Counter("rlhf_learner_events_duplicate_total", "Events already stored (same event id), ignored.")
REJECTED = Counter("rlhf_learner_events_rejected_total", "Records refused, by reason.", ["reason"])

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    reason TEXT NOT NULL,
    value BLOB
);
"""


class EventStore:
    """The learner's durable copy of the stream (WAL, synchronous=FULL: a commit survives power loss)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def store(self, records: Iterable[ConsumerRecord]) -> int:
        """Store records in one transaction; return how many events were new."""
        rows, rejected = [], []
        for record in records:
            try:
                event = parse_event(record.value)
            except UnknownSchemaVersion as error:
                rejected.append((record, "unknown_schema_version", str(error)))
                continue
            except ValueError as error:
                rejected.append((record, "malformed", str(error)))
                continue
            RECEIVED.labels(event.event_type).inc()
            rows.append((event.event_id, event.event_type, event.occurred_at.isoformat(), event.model_dump_json(),
                         record.topic, record.partition, record.offset))
        with self.db:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            new = self.db.total_changes - before
            self.db.executemany(
                "INSERT INTO rejected VALUES (?, ?, ?, ?, ?)",
                [(r.topic, r.partition, r.offset, reason, r.value) for r, reason, _ in rejected],
            )
        for record, reason, message in rejected:
            REJECTED.labels(reason).inc()
            log.error("ingest.rejected", topic=record.topic, partition=record.partition, offset=record.offset,
                      reason=reason, detail=message)
        DUPLICATES.inc(len(rows) - new)
        return new

    def count(self, event_type: str | None = None) -> int:
        if event_type is None:
            return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM events WHERE event_type = ?", (event_type,)).fetchone()[0]

    def events(self, kinds: tuple[str, ...], since: datetime | None = None, until: datetime | None = None) -> list:
        """Stored events of these types, oldest first, from `since` on and before `until` (None: unbounded)."""
        marks = ",".join("?" * len(kinds))
        before = " AND occurred_at < ?" if until else ""
        rows = self.db.execute(
            f"SELECT payload FROM events WHERE event_type IN ({marks}) AND occurred_at >= ?{before} ORDER BY occurred_at",
            (*kinds, since.isoformat() if since else "", *([until.isoformat()] if until else [])),
        )
        return [parse_event(payload.encode()) for (payload,) in rows]

    def recent(self, kind: str, limit: int) -> list:
        """The newest `limit` stored events of one type, oldest first."""
        rows = self.db.execute("SELECT payload FROM events WHERE event_type = ? ORDER BY occurred_at DESC LIMIT ?",
                               (kind, limit)).fetchall()
        return [parse_event(payload.encode()) for (payload,) in reversed(rows)]

    def close(self) -> None:
        self.db.close()


def make_consumer(settings: LearnerSettings) -> KafkaConsumer:
    session_ms = int(settings.consumer_session_timeout_s * 1000)
    return KafkaConsumer(
        settings.interactions_topic,
        settings.feedback_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,  # we commit after the store is durable
        auto_offset_reset="earliest",
        max_poll_records=settings.ingest_batch_size,
        # a learner killed without leaving the group holds its partitions until this runs out
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=min(3000, session_ms // 3),
    )


def ingest_once(consumer: KafkaConsumer, store: EventStore, poll_ms: int) -> int:
    """One poll: store what arrived, then commit its offsets. Returns how many events were new."""
    batches = consumer.poll(timeout_ms=poll_ms)
    records = [record for batch in batches.values() for record in batch]
    if not records:
        return 0
    new = store.store(records)
    consumer.commit()  # after the SQLite commit: a kill in between only causes a harmless re-read
    log.info("ingest.stored", received=len(records), new=new)
    return new
