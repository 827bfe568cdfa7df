"""One bad request must not stop the loop: an oversized body or field is refused with a 4xx before
anything is accepted, and a record Kafka refuses for good is set aside in the dead letter while every
later event is still delivered (real broker, real producer)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from feedback.broker import EmbeddedBroker
from feedback.events import ThumbEvent
from feedback.outbox import Outbox
from feedback.producer import DEAD_LETTERED, DurableProducer
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from tests.conftest import ServingServer, read_topic


def thumb(comment: str | None = None) -> ThumbEvent:
    return ThumbEvent(conversation_id=f"c-{uuid.uuid4().hex[:6]}", response_id="r:0", adapter_version=None, user_id="u",
                      rating="up", comment=comment)


def test_a_record_kafka_refuses_for_good_is_dead_lettered_and_delivery_goes_on(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers), feedback_topic=topic))
    before = DEAD_LETTERED.labels("outbox", "MessageSizeTooLargeError")._value.get()
    first, poison, after = thumb(), thumb("x" * 2_000_000), thumb()  # 2 MB: over Kafka's 1 MiB message limit
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    try:
        for event in (first, poison, after):
            producer.submit(topic, event).result(timeout=10)
        assert producer.wait_delivered(60), "the backlog never drained: the poison pill blocked delivery"
    finally:
        producer.close()
    delivered = read_topic(broker, topic, lambda rows: len(rows) >= 2)
    assert sorted(row["event_id"] for row in delivered) == sorted([first.event_id, after.event_id])
    assert DEAD_LETTERED.labels("outbox", "MessageSizeTooLargeError")._value.get() == before + 1
    dead = [json.loads(line) for line in (tmp_path / "outbox" / "dead-letter.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and json.loads(dead[0]["v"])["event_id"] == poison.event_id
    assert "MessageSizeTooLargeError" in dead[0]["reason"]
    assert Outbox(tmp_path / "outbox").pending == 0  # a restart finds nothing stuck


@pytest.mark.slow
def test_oversized_requests_are_refused_with_a_4xx_and_the_next_chat_still_reaches_kafka(
        serving: ServingServer, broker: EmbeddedBroker) -> None:
    url = f"{serving.base_url}/v1/chat/completions"
    chat = {"model": "rlhf-loop", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    with httpx.Client(timeout=120) as client:
        cases = [({**chat, "user": "u" * 2_000_000}, 413), ({**chat, "user": "u" * 300}, 400),
                 ({**chat, "stop": ["s" * 300]}, 400), ({**chat, "stop": ["a", "b", "c", "d", "e"]}, 400)]
        for body, status in cases:
            response = client.post(url, json=body)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == status and error["message"]
        marker = f"after-the-bad-ones-{uuid.uuid4().hex[:8]}"
        ok = client.post(url, json={**chat, "user": marker})
        assert ok.status_code == 200, ok.text
    rows = read_topic(broker, "rlhf.interactions", lambda rows: any(r.get("user_id") == marker for r in rows), timeout_s=60)
    assert any(r.get("user_id") == marker for r in rows)
