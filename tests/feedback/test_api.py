"""The feedback API on the real serving process (on the stand-in engine: no generation is needed) and
the real broker: accepted events arrive, bad input writes nothing."""

from __future__ import annotations

import json
import time
from unittest import mock

import httpx
import pytest

from feedback.broker import EmbeddedBroker
from serving.settings import ServingSettings
from serving.tokens import TokenSigner, prompt_hash
from tests.helpers import ServingServer, read_topic

FEEDBACK = "rlhf.feedback"


@pytest.fixture
def serving(http_serving: ServingServer) -> ServingServer:
    return http_serving


def signer(serving: ServingServer) -> TokenSigner:
    return TokenSigner(ServingSettings(home=serving.home).token_key(), 3600)


def token(serving: ServingServer, rid: str, *, user: str | None = "alice", prompt: str = "hi", age_s: float = 0,
          store: bool = True, duel: str | None = None) -> str:
    """A token as serving signs it, `age_s` seconds ago (the server's lifetime is RLHF_FEEDBACK_TOKEN_TTL_S)."""
    now = time.time
    with mock.patch("itsdangerous.timed.time.time", lambda: now() - age_s):
        return signer(serving).sign(rid=rid, c=f"conv-{prompt}", av="v0001", u=user, st=store,
                                    ph=prompt_hash([{"role": "user", "content": prompt}]), d=duel)


def accepted_total(serving: ServingServer) -> float:
    text = httpx.get(f"{serving.base_url}/metrics").text
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("rlhf_feedback_accepted_total{"))


def post(serving: ServingServer, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{serving.base_url}{path}", json=body, timeout=30, **kwargs)


def test_thumb_and_pairwise_reach_kafka(serving: ServingServer, broker: EmbeddedBroker) -> None:
    thumb = post(serving, "/v1/feedback", {"feedback_token": token(serving, "r-thumb"), "rating": "up",
                                            "comment": "nice", "reasons": ["helpful"]},
                 headers={"X-Forwarded-User": "alice"})
    assert thumb.status_code == 202, thumb.text
    pair = post(serving, "/v1/feedback/pairwise", {
        "feedback_token_a": token(serving, "r-a", duel="d1"), "feedback_token_b": token(serving, "r-b", duel="d1"),
        "choice": "b"})
    assert pair.status_code == 202, pair.text
    ids = {thumb.json()["id"], pair.json()["id"]}
    records = read_topic(broker, FEEDBACK, lambda rs: ids <= {r["event_id"] for r in rs})
    events = {r["event_id"]: r for r in records if r["event_id"] in ids}
    t = events[thumb.json()["id"]]
    assert (t["event_type"], t["rating"], t["response_id"], t["user_id"], t["comment"]) == ("thumb", "up", "r-thumb", "alice", "nice")
    p = events[pair.json()["id"]]
    assert (p["event_type"], p["choice"], p["response_id_a"], p["response_id_b"], p["duel_id"]) == ("pairwise", "b", "r-a", "r-b", "d1")


def test_a_correction_reaches_kafka_and_the_dataset_as_a_demonstration_and_a_pair(
        serving: ServingServer, broker: EmbeddedBroker, tmp_path) -> None:
    from feedback.events import InteractionEvent, Timings
    from learner import dataset
    from learner.store import EventStore
    from tests.helpers import record

    better = "Boil it for seven minutes, then cool it in cold water."
    first = post(serving, "/v1/feedback/correction", {"feedback_token": token(serving, "r-fix:0", prompt="How do I boil an egg?"),
                                                      "correction": "Boil it.", "reasons": ["incorrect"]})
    again = post(serving, "/v1/feedback/correction", {"feedback_token": token(serving, "r-fix:0", prompt="How do I boil an egg?"),
                                                      "correction": better}, headers={"Idempotency-Key": "fix-1"})
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    ids = [first.json()["id"], again.json()["id"]]
    records = read_topic(broker, FEEDBACK, lambda rs: set(ids) <= {r["event_id"] for r in rs})
    sent = [r for r in records if r["event_id"] in ids]
    assert [(r["event_type"], r["response_id"], r["user_id"], r["correction"]) for r in sent] == [
        ("correction", "r-fix:0", "alice", "Boil it."), ("correction", "r-fix:0", "alice", better)]

    # the learner's side: what it consumed from Kafka, joined to the answer it corrects (latest wins)
    served = InteractionEvent(response_id="r-fix:0", conversation_id="conv-How do I boil an egg?", user_id="alice",
                              model="m", adapter_version="v0001", messages=[{"role": "user", "content": "How do I boil an egg?"}],
                              response="Eggs are laid by hens.", finish_reason="stop", sampling={}, prompt_tokens=5,
                              completion_tokens=5, timings=Timings(time_to_first_token_s=0.1, total_s=0.2))
    store = EventStore(tmp_path / "events.sqlite")
    store.store([record(served.to_wire(), 0), *(record(json.dumps(r).encode(), i + 1) for i, r in enumerate(sent))])
    assert store.feedback_count() == 2
    data = dataset.build(store, max_per_user=200, max_wait_s=3600)
    prompt = (("user", "How do I boil an egg?"),)
    assert [(d.prompt, d.answer, d.user_id) for d in data.demonstrations] == [(prompt, better, "alice")]
    assert [(p.prompt, p.chosen, p.rejected) for p in data.pairs] == [(prompt, better, "Eggs are laid by hens.")]
    assert data.pointwise == []
    store.close()


def test_idempotency_key_makes_a_retry_a_no_op(serving: ServingServer, broker: EmbeddedBroker) -> None:
    body = {"feedback_token": token(serving, "r-idem"), "rating": "down"}
    first = post(serving, "/v1/feedback", body, headers={"Idempotency-Key": "k-1"})
    before = accepted_total(serving)
    again = post(serving, "/v1/feedback", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert accepted_total(serving) == before  # the retry wrote nothing
    conflict = post(serving, "/v1/feedback", {**body, "rating": "up"}, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 422 and "idempotency key" in conflict.json()["error"]["message"]
    records = read_topic(broker, FEEDBACK, lambda rs: first.json()["id"] in {r["event_id"] for r in rs})
    assert [r["event_id"] for r in records].count(first.json()["id"]) == 1


def test_store_false_feedback_is_acknowledged_but_not_recorded(serving: ServingServer) -> None:
    before = accepted_total(serving)
    response = post(serving, "/v1/feedback", {"feedback_token": token(serving, "r-private", store=False), "rating": "up"})
    assert response.status_code == 202 and response.json() == {"id": None, "object": "feedback", "stored": False}
    assert accepted_total(serving) == before


def _bad_requests(serving: ServingServer) -> list[tuple[str, str, dict | str, dict, int, str]]:
    good = token(serving, "r-bad")
    payload, stamp, signature = good.rsplit(".", 2)
    week = ServingSettings(home=serving.home).feedback_token_ttl_s
    return [
        ("forged", "/v1/feedback", {"feedback_token": "bm9wZQ.bm9wZQ.bm9wZQ", "rating": "up"}, {}, 401, "signature"),
        ("tampered", "/v1/feedback", {"feedback_token": f"{payload[:-2]}xx.{stamp}.{signature}", "rating": "up"}, {}, 401,
         "feedback_token"),
        ("expired", "/v1/feedback", {"feedback_token": token(serving, "r-old", age_s=week + 60), "rating": "up"}, {}, 410,
         "expired"),
        ("different prompts", "/v1/feedback/pairwise",
         {"feedback_token_a": token(serving, "r-1", prompt="one"), "feedback_token_b": token(serving, "r-2", prompt="two"),
          "choice": "a"}, {}, 400, "different prompts"),
        ("same response", "/v1/feedback/pairwise",
         {"feedback_token_a": good, "feedback_token_b": good, "choice": "a"}, {}, 400, "same response"),
        ("two users", "/v1/feedback/pairwise",
         {"feedback_token_a": token(serving, "r-3"), "feedback_token_b": token(serving, "r-4", user="bob"), "choice": "tie"},
         {}, 403, "different users"),
        ("unknown rating", "/v1/feedback", {"feedback_token": good, "rating": "meh"}, {}, 400, "rating"),
        ("unknown choice", "/v1/feedback/pairwise",
         {"feedback_token_a": token(serving, "r-5"), "feedback_token_b": token(serving, "r-6"), "choice": "c"}, {}, 400, "choice"),
        ("missing rating", "/v1/feedback", {"feedback_token": good}, {}, 400, "rating"),
        ("missing token", "/v1/feedback", {"rating": "up"}, {}, 400, "feedback_token"),
        ("long comment", "/v1/feedback", {"feedback_token": good, "rating": "up", "comment": "x" * 3000}, {}, 400, "comment"),
        ("1 MB body", "/v1/feedback", {"feedback_token": good, "rating": "up", "comment": "x" * 1_000_000}, {}, 413, "larger than"),
        ("unknown field", "/v1/feedback", {"feedback_token": good, "rating": "up", "score": 5}, {}, 400, "score"),
        ("empty correction", "/v1/feedback/correction", {"feedback_token": good, "correction": ""}, {}, 400, "correction"),
        ("blank correction", "/v1/feedback/correction", {"feedback_token": good, "correction": " \n "}, {}, 400,
         "needs some text"),
        ("long correction", "/v1/feedback/correction", {"feedback_token": good, "correction": "x" * 8001}, {}, 400,
         "correction"),
        ("correction without token", "/v1/feedback/correction", {"correction": "Better."}, {}, 400, "feedback_token"),
        ("correction, forged token", "/v1/feedback/correction", {"feedback_token": "bm9wZQ.bm9wZQ.bm9wZQ",
                                                                 "correction": "Better."}, {}, 401, "signature"),
        ("unknown reason", "/v1/feedback", {"feedback_token": good, "rating": "up", "reasons": ["spam!"]}, {}, 400, "reasons"),
    ]


def test_bad_feedback_is_a_clear_4xx_and_writes_nothing(serving: ServingServer) -> None:
    before = accepted_total(serving)
    for name, path, body, headers, status, words in _bad_requests(serving):
        response = post(serving, path, body, headers=headers)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert words in error["message"], (name, error)
    for content_type, raw in (("text/plain", "rating=up"), ("application/json", "{not json")):
        response = httpx.post(f"{serving.base_url}/v1/feedback", content=raw, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500 and "error" in response.json()
    assert accepted_total(serving) == before


def test_flooding_one_user_is_rate_limited_with_retry_after(serving: ServingServer) -> None:
    statuses = []
    for i in range(30):
        response = post(serving, "/v1/feedback", {"feedback_token": token(serving, f"r-flood-{i}", user="flooder"),
                                                  "rating": "down"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert "too much feedback" in response.json()["error"]["message"]
    assert statuses[:20] == [202] * 20  # the burst
    assert 429 in statuses[20:]
