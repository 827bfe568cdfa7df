"""With RLHF_USER_HEADER set, users are who the auth proxy says: a request without the header is a
401 (never attributed to the `user` a client wrote), a feedback token is good only for its own user,
and an operator's actions are attributed to the header's user. On the real app, in-process, with the
real feedback service and producer (the engine is not needed: chat is refused before it runs)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedback.broker import EmbeddedBroker
from feedback.producer import DurableProducer
from feedback.ratelimit import RateLimiter
from feedback.service import FeedbackService
from serving.app import create_app
from serving.settings import ServingSettings
from serving.tokens import prompt_hash

HEADER = "X-Forwarded-User"


@pytest.fixture
def app(tmp_path: Path, broker: EmbeddedBroker):
    settings = ServingSettings(_env_file=None, home=tmp_path, user_header=HEADER,
                               kafka_bootstrap_servers=",".join(broker.bootstrap_servers))
    app = create_app(settings)  # no `with`: the engine is not started; the feedback service is the real one
    producer = DurableProducer(broker.bootstrap_servers, tmp_path / "outbox").start()
    app.state.feedback = FeedbackService(app.state.token_signer.verify, producer, f"users-{uuid.uuid4().hex[:8]}",
                                         per_user=RateLimiter(600, 100), per_client=RateLimiter(600, 100))
    yield app
    producer.close(drain_timeout_s=0)


def token(app, user: str) -> str:
    return app.state.token_signer.sign(rid=f"r-{uuid.uuid4().hex[:6]}", c="conv", av=None, u=user, st=True,
                                       ph=prompt_hash([{"role": "user", "content": "hi"}]))


def test_without_the_proxys_header_chat_and_feedback_are_401(app) -> None:
    client = TestClient(app)
    chat = {"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "user": "mallory"}
    for path, body in (("/v1/chat/completions", chat), ("/v1/chat/duels", chat),
                       ("/v1/feedback", {"feedback_token": token(app, "alice"), "rating": "up"})):
        reply = client.post(path, json=body)
        assert reply.status_code == 401, (path, reply.text)
        assert reply.json()["error"]["type"] == "AuthenticationError" and HEADER in reply.json()["error"]["message"]


def test_a_token_is_good_only_for_the_user_the_proxy_names(app) -> None:
    client = TestClient(app)
    alices = token(app, "alice")
    foreign = client.post("/v1/feedback", json={"feedback_token": alices, "rating": "up"}, headers={HEADER: "bob"})
    assert foreign.status_code == 403 and "another user" in foreign.json()["error"]["message"]
    own = client.post("/v1/feedback", json={"feedback_token": alices, "rating": "up"}, headers={HEADER: "alice"})
    assert own.status_code == 202, own.text
    assert json.loads(own.text)["stored"] is True
