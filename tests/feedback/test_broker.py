"""The embedded broker: a real Kafka-protocol round trip, and one-line errors when it cannot start."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from feedback.broker import BrokerError, EmbeddedBroker
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from tests.helpers import free_port


def _consumer(broker: EmbeddedBroker, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=60_000, session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
    )


def test_consumer_group_resumes_from_committed_offset(broker: EmbeddedBroker) -> None:
    topic, group = f"roundtrip-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    settings = RuntimeSettings(
        kafka_bootstrap_servers=",".join(broker.bootstrap_servers), interactions_topic=topic, feedback_topic=topic + "-fb"
    )
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=True)
    for i in range(10):
        producer.send(topic, key=f"conversation-{i % 3}".encode(), value=json.dumps({"i": i}).encode())
    producer.flush()
    producer.close()

    first = _consumer(broker, topic, group)
    seen = []
    for record in first:
        seen.append(json.loads(record.value)["i"])
        if len(seen) == 4:
            break
    first.commit()  # commits what was handed out, not what was prefetched
    first.close()

    second = _consumer(broker, topic, group)
    rest = []
    for record in second:
        rest.append(json.loads(record.value)["i"])
        if len(seen) + len(rest) == 10:
            break
    second.close()
    assert sorted(seen + rest) == list(range(10))  # nothing lost, nothing repeated
    assert not set(seen) & set(rest)


def test_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BrokerError) as error:
            EmbeddedBroker(taken.getsockname()[1]).start()
    message = str(error.value)
    assert "already in use" in message and "RLHF_BROKER_PORT" in message
    assert "\n" not in message


def test_missing_binary_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError) as error:
        EmbeddedBroker(free_port()).start()
    assert "make install" in str(error.value)
    assert "\n" not in str(error.value)
