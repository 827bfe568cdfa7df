"""Stream to durable store: every record of the interactions and feedback topics, exactly once.

Records are written to SQLite keyed by (topic, partition, offset) and committed to Kafka only
after the SQLite transaction is durable, so a kill at any point loses nothing (uncommitted
records are read again) and double-counts nothing (the key makes a re-read a no-op).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable

import structlog
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from learner.settings import LearnerSettings

log = structlog.get_logger(__name__)

STORED = Counter("rlhf_learner_records_stored_total", "Kafka records stored durably, by topic.", ["topic"])

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
)
"""


class RecordStore:
    """The learner's durable copy of the stream (WAL, synchronous=FULL: a commit survives power loss)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)

    def store(self, records: Iterable[ConsumerRecord]) -> int:
        """Store records in one transaction; return how many were new."""
        rows = [(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
        with self.db:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
            return self.db.total_changes - before

    def count(self, topic: str | None = None) -> int:
        if topic is None:
            return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM records WHERE topic = ?", (topic,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()


def make_consumer(settings: LearnerSettings) -> KafkaConsumer:
    return KafkaConsumer(
        settings.interactions_topic,
        settings.feedback_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,  # we commit after the store is durable
        auto_offset_reset="earliest",
        max_poll_records=settings.ingest_batch_size,
    )


def ingest_once(consumer: KafkaConsumer, store: RecordStore, poll_ms: int) -> int:
    """One poll: store what arrived, then commit its offsets. Returns how many records were new."""
    batches = consumer.poll(timeout_ms=poll_ms)
    records = [record for batch in batches.values() for record in batch]
    if not records:
        return 0
    new = store.store(records)
    consumer.commit()  # after the SQLite commit: a kill in between only causes a harmless re-read
    for record in records:
        STORED.labels(record.topic).inc()
    log.info("ingest.stored", received=len(records), new=new)
    return new
