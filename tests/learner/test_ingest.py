"""The learner's store: dedupes by event id, refuses unknown schema versions loudly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from feedback.events import ThumbEvent
from learner.store import REJECTED, EventStore
from tests.helpers import record


def test_same_event_twice_is_stored_once_and_unknown_versions_are_set_aside(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    thumb = ThumbEvent(conversation_id="c", response_id="r", adapter_version=None, user_id="u", rating="up")
    future = json.dumps({**json.loads(thumb.to_wire()), "schema_version": 2, "event_id": "from-the-future"}).encode()
    before = REJECTED.labels("unknown_schema_version")._value.get()
    assert store.store([record(thumb.to_wire(), 0), record(thumb.to_wire(), 1), record(future, 2), record(b"{", 3)]) == 1
    assert store.store([record(thumb.to_wire(), 0)]) == 0  # a re-read after a crash
    assert store.count() == store.count("thumb") == 1
    assert REJECTED.labels("unknown_schema_version")._value.get() == before + 1
    reasons = [row[0] for row in store.db.execute("SELECT reason FROM rejected ORDER BY offset")]
    assert reasons == ["unknown_schema_version", "malformed"]
    store.close()
    assert EventStore(tmp_path / "events.sqlite").count() == 1  # durable across a reopen


def test_events_between_since_and_until(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    thumbs = [ThumbEvent(conversation_id=f"c{i}", response_id=f"r{i}", adapter_version=None, user_id="u", rating="up",
                         occurred_at=start + timedelta(minutes=i)) for i in range(3)]
    store.store([record(t.to_wire(), i) for i, t in enumerate(thumbs)])
    ids = lambda **bounds: [e.response_id for e in store.events(("thumb",), **bounds)]  # noqa: E731
    assert ids() == ["r0", "r1", "r2"]
    assert ids(since=thumbs[1].occurred_at) == ["r1", "r2"]
    assert ids(until=thumbs[1].occurred_at) == ["r0"]
    assert ids(since=thumbs[1].occurred_at, until=thumbs[2].occurred_at) == ["r1"]
    store.close()
