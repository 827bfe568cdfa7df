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
from feedback.outbox import Outbox, OutboxRecord
from feedback.producer import DEAD_LETTERED, DurableProducer
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics
from tests.helpers import ServingServer, read_topic


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


def test_oversized_requests_are_refused_with_a_4xx_and_the_next_chat_still_reaches_kafka(
        http_serving: ServingServer, broker: EmbeddedBroker) -> None:
    url = f"{http_serving.base_url}/v1/chat/completions"
    chat = {"model": "rlhf-loop", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    with httpx.Client(timeout=120) as client:
        cases = [({**chat, "user": "u" * 2_000_000}, 413), ({**chat, "user": "u" * 300}, 400),
                 ({**chat, "stop": ["s" * 300]}, 400), ({**chat, "stop": ["a", "b", "c", "d", "e"]}, 400),
                 ({**chat, "messages": [{"role": "wizard", "content": "Say hi."}]}, 400)]
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


# -- the outbox survives its disk ------------------------------------------------------------------
def test_the_cursor_is_written_at_intervals_and_on_close_and_a_crash_only_resends(tmp_path: Path) -> None:
    """Acknowledgements move the cursor in memory and on disk at most every cursor_every_s (its fsyncs
    would compete with the appends'); close writes the last one; a crash before it re-sends, loses nothing."""
    from feedback.outbox import Cursor

    def record(i: int) -> OutboxRecord:
        return OutboxRecord("t", b"k", json.dumps({"event_id": f"e{i}"}).encode(), 0.0)

    outbox = Outbox(tmp_path / "o", cursor_every_s=3600)
    outbox.append([record(i) for i in range(10)])
    first, after_first = outbox.read(outbox.cursor, 4)
    outbox.ack(after_first, 4, "cluster-a")  # a new cluster id: written at once
    _, after_second = outbox.read(after_first, 4)
    outbox.ack(after_second, 4, "cluster-a")  # within the interval: in memory only
    on_disk = json.loads((tmp_path / "o" / "cursor.json").read_text())
    assert Cursor(on_disk["segment"], on_disk["offset"]) == after_first and outbox.pending == 2
    outbox.close()  # no close here would be a crash: reopening below shows what a crash would do
    reopened = Outbox(tmp_path / "o", cursor_every_s=3600)
    assert reopened.cursor == after_second and reopened.pending == 2
    reopened.close()
    (tmp_path / "o" / "cursor.json").write_text(json.dumps({**on_disk}))  # as if it crashed before close
    crashed = Outbox(tmp_path / "o")
    assert crashed.cursor == after_first and crashed.pending == 6  # 4 delivered records go again: dedup by id
    crashed.close()


def test_persist_group_commits_one_loop_turn_and_a_failed_write_fails_every_waiter(broker: EmbeddedBroker,
                                                                                  tmp_path: Path, monkeypatch) -> None:
    """persist(): 300 events awaited together are written in a handful of fsyncs, each is in the outbox
    when its await returns; a write that fails raises in every waiting request, none is kept."""
    import asyncio
    import errno
    import os

    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    try:
        async def together(events: list) -> list:
            return await asyncio.gather(*(producer.persist("t", e) for e in events), return_exceptions=True)

        events = [thumb() for _ in range(300)]
        assert asyncio.run(together(events)) == [None] * 300
        def on_disk() -> list[OutboxRecord]:
            return [OutboxRecord.from_line(line) for seg in sorted((tmp_path / "outbox").glob("*.log"))
                    for line in seg.read_bytes().splitlines()]
        assert {json.loads(r.value)["event_id"] for r in on_disk()} == {e.event_id for e in events}
        assert 1 <= len(fsyncs) <= 10, len(fsyncs)  # a batch per loop turn (500 at most), not one per event

        def full(fd: int, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Outbox, "_write", staticmethod(full))
        failed = asyncio.run(together([thumb() for _ in range(50)]))
        assert all(isinstance(error, OSError) and error.errno == errno.ENOSPC for error in failed)
        assert len(on_disk()) == 300 and producer.health()["writer"]
    finally:
        producer.close()


def test_a_full_disk_refuses_the_write_whole_and_keeps_nothing_torn(broker: EmbeddedBroker, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """ENOSPC midway through an append (injected at the write: these tests may not mount a small
    tmpfs): the append raises, the segment is cut back to its last whole record, the writer thread
    goes on, and appends succeed again once space returns."""
    import errno

    from feedback.producer import APPEND_FAILURES

    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    try:
        producer.submit("t", thumb()).result(timeout=10)
        segment = next((tmp_path / "outbox").glob("*.log"))
        whole = segment.stat().st_size
        real_write = Outbox._write

        def half_then_full(fd: int, data: bytes) -> None:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Outbox, "_write", staticmethod(half_then_full))
        failures = APPEND_FAILURES.labels("outbox")._value.get()
        with pytest.raises(OSError, match="No space left"):
            producer.submit("t", thumb()).result(timeout=10)
        assert segment.stat().st_size == whole and segment.read_bytes().endswith(b"\n")
        assert not producer.health()["writable"] and APPEND_FAILURES.labels("outbox")._value.get() == failures + 1
        monkeypatch.setattr(Outbox, "_write", staticmethod(real_write))  # space is back
        producer.submit("t", thumb()).result(timeout=10)
        assert producer.health()["writable"] and producer.health()["writer"]
    finally:
        producer.close()
    lines = segment.read_bytes().splitlines()
    assert len(lines) == 2 and all(not OutboxRecord.from_line(line).corrupt for line in lines)


def test_feedback_on_a_full_disk_is_a_503_with_retry_after_and_nothing_is_stored(tmp_path: Path) -> None:
    import asyncio
    import errno

    from fastapi.testclient import TestClient

    from feedback.protocol import FeedbackCreate
    from feedback.ratelimit import RateLimiter
    from feedback.service import FeedbackRefused, FeedbackService
    from serving.app import create_app
    from serving.settings import ServingSettings

    class FullDisk:  # the producer's contract: persist() raises the outbox's OSError
        async def persist(self, topic, event) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    class Rated:
        response_id, conversation_id, adapter_version, user_id, store, prompt_hash, duel_id = "r:0", "c", None, "u", True, "h", None

    service = FeedbackService(lambda token: Rated(), FullDisk(), "t", per_user=RateLimiter(60, 10),
                              per_client=RateLimiter(60, 10))
    with pytest.raises(FeedbackRefused) as refused:
        asyncio.run(service.thumb(FeedbackCreate(feedback_token="x", rating="up"), user=None, client="c",
                                  idempotency_key="k1"))
    assert refused.value.status == 503 and "No space left" in refused.value.message
    app = create_app(ServingSettings(_env_file=None, home=tmp_path))  # the HTTP layer's answer (no lifespan)
    app.state.feedback = service
    response = TestClient(app).post("/v1/feedback", json={"feedback_token": "x", "rating": "up"},
                                    headers={"Idempotency-Key": "k2"})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["type"] == "storage_unavailable"
    assert response.json()["error"]["code"] == 503
    assert not service._seen  # a retry with the same key is tried again, not answered "accepted"


def test_a_torn_tail_is_cut_on_open_and_a_corrupt_line_is_dead_lettered_not_fatal(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers), feedback_topic=topic))
    first, after = thumb(), thumb()
    outbox = Outbox(tmp_path / "outbox")
    outbox.append([OutboxRecord(topic, first.kafka_key(), first.to_wire(), 0.0)])
    outbox.close()
    segment = next((tmp_path / "outbox").glob("*.log"))
    with open(segment, "ab") as stream:  # a line broken in the middle of the log (a disk that lied), then a torn tail
        stream.write(b'{"t": "' + topic.encode() + b'", "k": "x", "v\n' + OutboxRecord(topic, after.kafka_key(), after.to_wire(), 0.0).to_line() + b'{"t": "half')
    reopened = Outbox(tmp_path / "outbox")
    assert not segment.read_bytes().endswith(b"half") and reopened.pending == 3  # the torn tail is gone
    reopened.close()
    before = DEAD_LETTERED.labels("outbox", "CorruptLine")._value.get()
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    try:
        assert producer.wait_delivered(60) and producer.health()["sender"]
    finally:
        producer.close()
    delivered = read_topic(broker, topic, lambda rows: len(rows) >= 2)
    assert sorted(row["event_id"] for row in delivered) == sorted([first.event_id, after.event_id])
    assert DEAD_LETTERED.labels("outbox", "CorruptLine")._value.get() == before + 1
    dead = json.loads((tmp_path / "outbox" / "dead-letter.jsonl").read_text().splitlines()[-1])
    assert dead["raw"].startswith('{"t": ') and "corrupt" in dead["reason"]


def test_writer_and_sender_threads_that_fail_are_restarted_and_counted(broker: EmbeddedBroker, tmp_path: Path,
                                                                       monkeypatch) -> None:
    from feedback.producer import THREAD_RESTARTS

    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=",".join(broker.bootstrap_servers), feedback_topic=topic))
    restarts = {t: THREAD_RESTARTS.labels("outbox", t)._value.get() for t in ("writer", "sender")}
    real_append, real_ack = Outbox.append, Outbox.ack
    calls = {"append": 0, "ack": 0}

    def append_fails_once(self, records):
        calls["append"] += 1
        if calls["append"] == 1:
            raise RuntimeError("a bug in the writer")
        return real_append(self, records)

    def ack_fails_once(self, *args):
        calls["ack"] += 1
        if calls["ack"] == 1:
            raise PermissionError("cursor.json: read-only file system")
        return real_ack(self, *args)
    monkeypatch.setattr(Outbox, "append", append_fails_once)
    monkeypatch.setattr(Outbox, "ack", ack_fails_once)
    events = [thumb(), thumb()]
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox", retry_backoff_s=0.1).start()
    try:
        with pytest.raises(RuntimeError, match="a bug in the writer"):
            producer.submit(topic, thumb()).result(timeout=10)  # refused: never acknowledged, never stored
        for event in events:
            producer.submit(topic, event).result(timeout=10)
        assert producer.wait_delivered(60)
        health = producer.health()
        assert health["writer"] and health["sender"] and "read-only" in health["errors"]["sender"]
    finally:
        producer.close()
    assert {t: THREAD_RESTARTS.labels("outbox", t)._value.get() - restarts[t] for t in restarts} == {"writer": 1, "sender": 1}
    delivered = read_topic(broker, topic, lambda rows: len(rows) >= 2)
    assert {row["event_id"] for row in delivered} == {e.event_id for e in events}


def test_the_reader_never_skips_records_the_writer_adds_just_before_it_rolls(tmp_path: Path, monkeypatch) -> None:
    """The race, made to happen: the reader reaches the end of a segment; before it moves on, the writer
    appends one more record there and rolls to the next segment. The reader must come back for it."""
    import feedback.outbox as module

    def record(i: int) -> OutboxRecord:
        return OutboxRecord("t", b"k", str(i).encode(), 0.0)

    outbox = Outbox(tmp_path / "outbox")
    outbox.append([record(0)])
    real_open, race = open, {"armed": True}

    class WriterRunsAtClose:  # the reader's segment file: the writer gets the CPU as the reader closes it
        def __init__(self, stream) -> None:
            self.stream = stream

        def __enter__(self):
            return self.stream

        def __exit__(self, *exc) -> None:
            self.stream.close()
            if race.pop("armed", False):
                outbox.append([record(1)])  # into the segment just read to its end
                outbox.segment_bytes = 1
                outbox.append([record(2)])  # rolls first: into the next segment

    monkeypatch.setattr(module, "open", lambda path, mode="r", *a, **kw: WriterRunsAtClose(real_open(path, mode, *a, **kw))
                        if mode == "rb" and str(path).endswith(".log") else real_open(path, mode, *a, **kw), raising=False)
    first, cursor = outbox.read(outbox.cursor, 100)
    rest, _ = outbox.read(cursor, 100)
    assert [int(r.value) for r in first + rest] == [0, 1, 2]
    outbox.close()
