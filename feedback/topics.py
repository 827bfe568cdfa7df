"""Topic creation: idempotent, so every start (and every fresh embedded broker) can call it."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from feedback.settings import RuntimeSettings


def ensure_topics(settings: RuntimeSettings, *, replication_factor: int = 1) -> list[str]:
    """Create the interactions and feedback topics where they are missing; return their names."""
    wanted = [settings.interactions_topic, settings.feedback_topic]
    admin = KafkaAdminClient(client_id="rlhf-loop-admin", **settings.kafka_client())
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=replication_factor)
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another process created it between list and create
                pass
    finally:
        admin.close()
    return wanted
