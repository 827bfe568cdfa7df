"""The learner's durable copy of the interactions and feedback topics (SQLite): what training reads.

Events are keyed by their event id, so a re-read, a producer retry or an outbox replay after a broker
restart is ignored. A record of an unknown schema version is not guessed at: it is logged, counted and
kept aside in `rejected`. At scale: events are indexed by type and time (and interactions by response
id, everything by user), per-type counts are kept by triggers (no table scans per poll), old events
leave after RLHF_DATASET_RETENTION_DAYS, and a `forget` event deletes a user's events and keeps their
later ones out (replays included). Reading from Kafka into it: learner/ingest.py.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Iterable

import structlog
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from feedback.events import (FEEDBACK_KINDS, CorrectionEvent, ForgetEvent, InteractionEvent, PairwiseEvent, ThumbEvent, UnknownSchemaVersion,
                             parse_event)

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
CREATE INDEX IF NOT EXISTS events_by_type_time ON events (event_type, occurred_at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (occurred_at);
CREATE INDEX IF NOT EXISTS interactions_by_response ON events (json_extract(payload, '$.response_id'))
    WHERE event_type = 'interaction';
CREATE INDEX IF NOT EXISTS events_by_user ON events (json_extract(payload, '$.user_id'));
CREATE TABLE IF NOT EXISTS counts (event_type TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS count_insert AFTER INSERT ON events BEGIN
    INSERT INTO counts VALUES (new.event_type, 1) ON CONFLICT (event_type) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS count_delete AFTER DELETE ON events BEGIN
    UPDATE counts SET n = n - 1 WHERE event_type = old.event_type;
END;
CREATE TABLE IF NOT EXISTS forgotten (user_id TEXT PRIMARY KEY, at TEXT NOT NULL);
"""


MODELS = {"interaction": InteractionEvent, "thumb": ThumbEvent, "pairwise": PairwiseEvent, "correction": CorrectionEvent}


def _load(event_type: str, payload: str):
    """A stored event (validated at ingest) by its type column: one pydantic JSON parse, no dispatch."""
    return MODELS[event_type].model_validate_json(payload)


class EventStore:
    """The learner's durable copy of the stream (WAL, synchronous=FULL: a commit survives power loss)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.db:
            counted = self.db.execute("SELECT name FROM sqlite_master WHERE name = 'counts'").fetchone()
            self.db.executescript(SCHEMA)
            if counted is None:  # a store from before the counters: count once
                self.db.execute("INSERT INTO counts SELECT event_type, COUNT(*) FROM events GROUP BY event_type")
        self.forgotten = {user for (user,) in self.db.execute("SELECT user_id FROM forgotten")}

    def store(self, records: Iterable[ConsumerRecord]) -> int:
        """Store records in one transaction; return how many events were new."""
        rows, rejected, forget = [], [], []
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
            if isinstance(event, ForgetEvent):
                forget.append(event.user_id)
                continue
            if event.user_id is not None and event.user_id in self.forgotten:
                continue  # a forgotten user's event arriving late (or replayed): never stored
            rows.append((event.event_id, event.event_type, event.occurred_at.isoformat(), event.model_dump_json(),
                         record.topic, record.partition, record.offset))
        with self.db:
            # rowcount: the rows inserted by the statement itself (total_changes would count the triggers' too)
            new = max(0, self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows).rowcount)
            for user in forget:
                self._forget(user)
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
        """Stored events (of one type), from the running counters."""
        if event_type is None:
            return self.db.execute("SELECT COALESCE(SUM(n), 0) FROM counts").fetchone()[0]
        row = self.db.execute("SELECT n FROM counts WHERE event_type = ?", (event_type,)).fetchone()
        return row[0] if row else 0

    def feedback_count(self) -> int:
        """Stored ratings of every kind (thumbs, duels, corrections)."""
        return sum(self.count(kind) for kind in FEEDBACK_KINDS)

    def forget(self, user_id: str) -> int:
        """Delete a user's events and keep their later ones out; returns how many were deleted."""
        with self.db:
            return self._forget(user_id)

    def _forget(self, user_id: str) -> int:
        self.forgotten.add(user_id)
        self.db.execute("INSERT OR IGNORE INTO forgotten VALUES (?, datetime('now'))", (user_id,))
        deleted = self.db.execute("DELETE FROM events WHERE json_extract(payload, '$.user_id') = ?", (user_id,)).rowcount
        log.info("ingest.forgot_user", events=deleted)  # the id itself stays out of the logs
        return deleted

    def expire(self, before: datetime) -> int:
        """Delete events that occurred before `before` (retention); returns how many."""
        with self.db:
            return self.db.execute("DELETE FROM events WHERE occurred_at < ?", (before.isoformat(),)).rowcount

    def interactions(self, response_ids: Iterable[str]) -> dict:
        """The stored interactions with these response ids (index lookups), by response id."""
        wanted, found = list(dict.fromkeys(response_ids)), {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            rows = self.db.execute(  # INDEXED BY: the planner would pick the type index and scan every interaction
                "SELECT payload FROM events INDEXED BY interactions_by_response WHERE event_type = 'interaction' AND "
                f"json_extract(payload, '$.response_id') IN ({','.join('?' * len(part))})", part)
            for (payload,) in rows:
                event = _load("interaction", payload)
                found[event.response_id] = event
        return found

    def newest_payloads(self, kind: str, limit: int) -> list[dict]:
        """The newest `limit` events of one type as plain JSON (no validation: fast), newest first."""
        rows = self.db.execute("SELECT payload FROM events WHERE event_type = ? ORDER BY occurred_at DESC LIMIT ?",
                               (kind, limit))
        return [json.loads(payload) for (payload,) in rows]

    def newest_at(self) -> datetime | None:
        row = self.db.execute("SELECT MAX(occurred_at) FROM events").fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def events(self, kinds: tuple[str, ...], since: datetime | None = None, until: datetime | None = None) -> list:
        """Stored events of these types, oldest first, from `since` on and before `until` (None: unbounded)."""
        marks = ",".join("?" * len(kinds))
        before = " AND occurred_at < ?" if until else ""
        rows = self.db.execute(
            f"SELECT event_type, payload FROM events WHERE event_type IN ({marks}) AND occurred_at >= ?{before} "
            "ORDER BY occurred_at",
            (*kinds, since.isoformat() if since else "", *([until.isoformat()] if until else [])),
        )
        return [_load(*row) for row in rows]

    def recent(self, kind: str, limit: int) -> list:
        """The newest `limit` stored events of one type, oldest first."""
        rows = self.db.execute("SELECT payload FROM events WHERE event_type = ? ORDER BY occurred_at DESC LIMIT ?",
                               (kind, limit)).fetchall()
        return [_load(kind, payload) for (payload,) in reversed(rows)]

    def close(self) -> None:
        self.db.close()
