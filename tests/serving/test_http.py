"""The HTTP layer on the stand-in engine (tests/helpers.py), in-process: chat answers carry their
feedback handles, streams end with them, and a bug of ours is a logged 500, never a 4xx. The same
routes on the real engine are tested in test_chat.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedback.broker import EmbeddedBroker
from serving.app import create_app
from serving.engine import engine_dtype
from serving.settings import ServingSettings
from tests.helpers import StandInEngine, stand_in_engine

CHAT = {"model": "rlhf-loop", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "user": "alice"}


@pytest.fixture
def client(tmp_path: Path, broker: EmbeddedBroker):
    settings = ServingSettings(_env_file=None, home=tmp_path, kafka_bootstrap_servers=",".join(broker.bootstrap_servers))
    engine = StandInEngine()
    with TestClient(create_app(settings, stand_in_engine(engine)), raise_server_exceptions=False) as client:
        client.engine = engine
        yield client


def test_chat_on_the_stand_in_carries_a_feedback_handle_that_the_feedback_api_takes(client) -> None:
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"].split()[0] == "About"
    handle = body["feedback"][0]
    assert handle["response_id"] == f"{body['id']}:0" and handle["adapter_version"] is None
    assert client.engine.requests[0].model == "rlhf-loop"
    thumb = client.post("/v1/feedback", json={"feedback_token": handle["feedback_token"], "rating": "up"})
    assert thumb.status_code == 202, thumb.text


def test_a_stream_ends_with_the_feedback_handles_before_done(client) -> None:
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["feedback"][0]["response_id"].endswith(":0") and last["choices"] == []
    assert not any('"usage"' in line for line in lines[:-2])  # the usage chunk we asked for is not passed on


@pytest.mark.parametrize("error", [ValueError("a bug of ours"), TypeError("another"), KeyError("x")])
def test_a_bug_of_ours_is_a_logged_500_not_a_4xx(client, monkeypatch, error: Exception) -> None:
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("serving.chat.prompt_hash", broken)
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 500, reply.text
    assert reply.json()["error"] == {"message": "internal error; the server logged the details",
                                     "type": "InternalServerError", "param": None, "code": 500}


def test_before_the_engine_is_up_chat_and_models_are_503_with_retry_after(tmp_path: Path) -> None:
    app = create_app(ServingSettings(_env_file=None, home=tmp_path), stand_in_engine())
    client = TestClient(app)  # no `with`: the lifespan (and the engine) never starts
    for method, path, body in (("POST", "/v1/chat/completions", CHAT), ("POST", "/v1/chat/duels", CHAT),
                               ("GET", "/v1/models", None)):
        reply = client.request(method, path, json=body)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "5", (path, reply.text)
        assert reply.json()["error"]["type"] == "ServiceUnavailableError"
    assert client.get("/readyz").json() == {"status": "starting"} and client.get("/healthz").status_code == 200


def test_an_engine_that_dies_makes_the_replica_unready_and_stop_and_a_failed_generation_is_a_500(client) -> None:
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    stops = []
    client.app.state.on_engine_dead = lambda: stops.append(True)  # the real one sends SIGTERM to the process

    async def generation_fails(body, request):
        raise EngineGenerateError()
    client.engine.chat = generation_fails
    failed = client.post("/v1/chat/completions", json=CHAT)
    assert failed.status_code == 500 and "engine failed on this request" in failed.json()["error"]["message"]
    assert not stops and client.get("/readyz").status_code == 200

    async def engine_dies(body, request):
        raise EngineDeadError()
    client.engine.chat = engine_dies
    dead = client.post("/v1/chat/completions", json=CHAT)
    assert dead.status_code == 503 and dead.headers["Retry-After"] == "30", dead.text
    assert stops == [True] and client.get("/readyz").status_code == 503 and client.app.state.engine_failed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/duels"])
def test_message_parts_given_as_an_empty_list_are_served_not_a_500(client, path: str) -> None:
    """OpenAI's types declare content parts as an Iterable: pydantic hands an empty list over as a one-shot
    iterator, which a duel could not copy (schemathesis found that 500) and logging could not re-read."""
    body = {**CHAT, "messages": [{"role": "system", "content": []}, {"role": "user", "content": "Say hi."}]}
    reply = client.post(path, json=body)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_the_machine_computes_it_natively(monkeypatch, tmp_path, native: bool) -> None:
    monkeypatch.setattr("serving.engine.native_bfloat16", lambda: native)
    assert engine_dtype(ServingSettings(home=tmp_path)) == ("bfloat16" if native else "float32")
    for asked in ("bfloat16", "float16", "float32"):  # what the operator asks for stands
        assert engine_dtype(ServingSettings(home=tmp_path, dtype=asked)) == asked
