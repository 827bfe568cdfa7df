"""Stream to durable store: every event of the interactions and feedback topics, exactly once.

Events are written to the learner's store (learner/store.py, SQLite keyed by event id), and offsets are
committed to Kafka only after the SQLite transaction is durable. A kill at any point loses nothing
(uncommitted records are read again) and double-counts nothing (a re-read carries the same event id and
is ignored).
"""

from __future__ import annotations

import structlog
from kafka import KafkaConsumer

from learner.settings import LearnerSettings
from learner.store import EventStore

log = structlog.get_logger(__name__)


def make_consumer(settings: LearnerSettings) -> KafkaConsumer:
    session_ms = int(settings.consumer_session_timeout_s * 1000)
    return KafkaConsumer(
        settings.interactions_topic,
        settings.feedback_topic,
        **settings.kafka_client(),
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
