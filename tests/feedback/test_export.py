"""`rlhf-loop feedback export | stats` against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feedback.broker import EmbeddedBroker
from feedback.events import InteractionEvent, PairwiseEvent, ThumbEvent, Timings
from feedback.producer import DurableProducer
from feedback.settings import RuntimeSettings
from feedback.topics import ensure_topics

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def thumb(rid: str, user: str, rating: str, adapter: str | None, minutes: int) -> ThumbEvent:
    return ThumbEvent(conversation_id=f"c-{rid}", response_id=rid, adapter_version=adapter, user_id=user, rating=rating,
                      occurred_at=T0 + timedelta(minutes=minutes))


def duel(a: str | None, b: str | None, choice: str, minutes: int) -> PairwiseEvent:
    return PairwiseEvent(conversation_id="c-duel", response_id_a=f"ra{minutes}", response_id_b=f"rb{minutes}",
                         adapter_version_a=a, adapter_version_b=b, user_id="u", choice=choice,
                         occurred_at=T0 + timedelta(minutes=minutes))


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {"RLHF_KAFKA_BOOTSTRAP_SERVERS": ",".join(broker.bootstrap_servers),
           "RLHF_INTERACTIONS_TOPIC": f"i-{suffix}", "RLHF_FEEDBACK_TOPIC": f"f-{suffix}"}
    settings = RuntimeSettings(kafka_bootstrap_servers=env["RLHF_KAFKA_BOOTSTRAP_SERVERS"],
                               interactions_topic=env["RLHF_INTERACTIONS_TOPIC"], feedback_topic=env["RLHF_FEEDBACK_TOPIC"])
    ensure_topics(settings)
    producer = DurableProducer(broker.bootstrap_servers, tmp_path_factory.mktemp("outbox") / "export").start()
    interaction = InteractionEvent(
        response_id="r1", conversation_id="c-r1", user_id="ann", model="m", adapter_version="v1",
        messages=[{"role": "user", "content": "hi"}], response="hello", finish_reason="stop", sampling={"temperature": 1},
        prompt_tokens=3, completion_tokens=2, timings=Timings(time_to_first_token_s=0.1, total_s=0.2),
        occurred_at=T0,
    )
    events = [
        (settings.interactions_topic, interaction),
        (settings.feedback_topic, thumb("r1", "ann", "down", "v1", 1)),
        (settings.feedback_topic, thumb("r1", "ann", "up", "v1", 2)),  # ann changed her mind: latest wins
        (settings.feedback_topic, thumb("r2", "bob", "down", "v1", 3)),
        (settings.feedback_topic, thumb("r3", "bob", "up", "v2", 4)),
        (settings.feedback_topic, duel("v1", "v2", "b", 5)),
        (settings.feedback_topic, duel("v2", "v1", "a", 6)),  # the same pairing, sides swapped
        (settings.feedback_topic, duel("v1", "v2", "tie", 7)),
    ]
    duplicate = events[1]  # a producer retry: same event id twice on the wire
    for topic, event in [*events, duplicate]:
        producer.submit(topic, event)
    assert producer.wait_delivered(30)
    producer.close()
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlhf_loop.cli", "feedback", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_export_jsonl_deduplicates_and_filters(topics: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert cli(topics, "export", "-o", str(out)).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and len({r["event_id"] for r in rows}) == 8
    window = tmp_path / "window.jsonl"
    done = cli(topics, "export", "-o", str(window), "--kinds", "thumb", "--since", "2026-11-01T00:02:00Z",
               "--until", "2026-11-01T00:04:00Z")
    assert done.returncode == 0, done.stderr
    assert [json.loads(l)["response_id"] for l in window.read_text().splitlines()] == ["r1", "r2"]


def test_export_parquet(topics: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "interactions.parquet"
    assert cli(topics, "export", "-o", str(out), "--kinds", "interaction").returncode == 0
    table = pq.read_table(out).to_pylist()
    assert len(table) == 1 and table[0]["response"] == "hello"
    assert json.loads(table[0]["messages"]) == [{"role": "user", "content": "hi"}]


def test_stats_apply_latest_wins_and_merge_swapped_pairings(topics: dict[str, str]) -> None:
    done = cli(topics, "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["counts"] == {"interaction": 1, "thumb": 4, "pairwise": 3}
    assert stats["thumbs_by_adapter"]["v1"] == {"up": 1, "down": 1, "up_rate": 0.5}
    assert stats["thumbs_by_adapter"]["v2"] == {"up": 1, "down": 0, "up_rate": 1.0}
    (pairing,) = stats["pairwise"]
    assert (pairing["a"], pairing["b"], pairing["a_wins"], pairing["b_wins"], pairing["tie"]) == ("v1", "v2", 0, 2, 1)
    assert cli(topics, "stats").returncode == 0  # the human-readable tables render too


def test_bad_arguments_are_one_line_errors(topics: dict[str, str]) -> None:
    done = cli(topics, "stats", "--kinds", "likes")
    assert done.returncode == 2 and "kinds are interaction, thumb, pairwise" in done.stderr
    done = cli(topics, "stats", "--since", "yesterday")
    assert done.returncode == 2 and "not an ISO time" in done.stderr


def test_a_forgotten_user_is_absent_from_every_later_export(broker: EmbeddedBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {"RLHF_KAFKA_BOOTSTRAP_SERVERS": ",".join(broker.bootstrap_servers),
           "RLHF_INTERACTIONS_TOPIC": f"i-{suffix}", "RLHF_FEEDBACK_TOPIC": f"f-{suffix}"}
    ensure_topics(RuntimeSettings(kafka_bootstrap_servers=env["RLHF_KAFKA_BOOTSTRAP_SERVERS"],
                                  interactions_topic=env["RLHF_INTERACTIONS_TOPIC"], feedback_topic=env["RLHF_FEEDBACK_TOPIC"]))
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    for event in (thumb("r1", "carol", "up", None, 1), thumb("r2", "dave", "down", None, 2)):
        producer.submit(env["RLHF_FEEDBACK_TOPIC"], event)
    assert producer.wait_delivered(30)
    producer.close()
    done = cli(env, "forget", "--user", "carol")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "after.jsonl"
    assert cli(env, "export", "-o", str(out)).returncode == 0
    assert [json.loads(line)["user_id"] for line in out.read_text().splitlines()] == ["dave"]
