"""The learner service killed mid-ingest resumes without losing or repeating an event."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from feedback.broker import EmbeddedBroker
from feedback.events import ThumbEvent
from feedback.producer import DurableProducer
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics

pytestmark = pytest.mark.slow

EVENTS = 3000


def stored(path: Path) -> tuple[int, int]:
    """(rows, distinct event ids) in the learner's store; (0, 0) before it exists."""
    if not path.exists():
        return 0, 0
    with sqlite3.connect(path, timeout=10) as db:
        try:
            return db.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").fetchone()
        except sqlite3.OperationalError:  # the table is not created yet
            return 0, 0


def test_sigkilled_learner_resumes_without_losing_or_repeating(broker: EmbeddedBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {**os.environ, "RLHF_HOME": str(tmp_path), "RLHF_KAFKA_BOOTSTRAP_SERVERS": ",".join(broker.bootstrap_servers),
           "RLHF_INTERACTIONS_TOPIC": f"i-{suffix}", "RLHF_FEEDBACK_TOPIC": f"f-{suffix}",
           "RLHF_CONSUMER_GROUP": f"learner-{suffix}", "RLHF_INGEST_BATCH_SIZE": "50",
           "RLHF_MIN_NEW_FEEDBACK": "1000000"}  # ingest only: no training cycle in this test
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=env["RLHF_KAFKA_BOOTSTRAP_SERVERS"],
                                  interactions_topic=env["RLHF_INTERACTIONS_TOPIC"], feedback_topic=env["RLHF_FEEDBACK_TOPIC"]))
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    ids = set()
    for i in range(EVENTS):
        event = ThumbEvent(conversation_id=f"c{i % 40}", response_id=f"r{i}", adapter_version=None, user_id="u", rating="up")
        ids.add(event.event_id)
        producer.submit(env["RLHF_FEEDBACK_TOPIC"], event)
    assert producer.wait_delivered(60)
    producer.close()

    database = tmp_path / "learner" / "events.sqlite"
    learner = subprocess.Popen([sys.executable, "-m", "learner"], env=env)
    deadline = time.monotonic() + 120
    while stored(database)[0] < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(learner.pid, signal.SIGKILL)  # mid-ingest: some batches stored, maybe not yet committed
    learner.wait()
    partial = stored(database)[0]
    assert 0 < partial < EVENTS, partial

    learner = subprocess.Popen([sys.executable, "-m", "learner"], env=env)
    try:
        deadline = time.monotonic() + 180
        while stored(database)[0] < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # anything re-read after the kill has had time to arrive (and be ignored)
        rows, distinct = stored(database)
        assert rows == distinct == EVENTS
        with sqlite3.connect(database) as db:
            assert {row[0] for row in db.execute("SELECT event_id FROM events")} == ids
    finally:
        learner.terminate()
        learner.wait(60)
