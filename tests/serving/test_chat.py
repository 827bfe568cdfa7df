"""The chat API on the real vLLM engine and broker, through the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from feedback.broker import EmbeddedBroker
from serving.engine import engine_dtype
from serving.settings import ServingSettings
from serving.tokens import TokenSigner
from tests.helpers import ServingServer, read_topic

pytestmark = pytest.mark.slow

INTERACTIONS = "rlhf.interactions"


@pytest.fixture(scope="module")
def client(serving: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serving.base_url}/v1", api_key="unused", max_retries=0)


def signer_of(serving: ServingServer) -> TokenSigner:
    """The verifier another replica would build from the same settings (key on the shared home)."""
    settings = ServingSettings(home=serving.home)
    return TokenSigner(settings.token_key(), settings.feedback_token_ttl_s)


def events_for(broker: EmbeddedBroker, response_ids: set[str]) -> list[dict]:
    records = read_topic(broker, INTERACTIONS, lambda rs: response_ids <= {r["response_id"] for r in rs})
    return [r for r in records if r["response_id"] in response_ids]


def test_health_and_readiness(serving: ServingServer) -> None:
    assert httpx.get(f"{serving.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{serving.base_url}/readyz").status_code == 200
    # the engine runs at the dtype that auto resolves to on this machine (float32 where bfloat16 is emulated)
    assert f"dtype=torch.{engine_dtype(ServingSettings(home=serving.home))}," in serving.log_path.read_text()
    # while the engine started, liveness kept answering (it is built off the event loop)
    assert serving.live_probes >= 5 and serving.most_missed_in_a_row < 3, (serving.live_probes, serving.most_missed_in_a_row)


def test_answer_carries_a_verifiable_feedback_token_and_is_logged_once(
    client: openai.OpenAI, serving: ServingServer, broker: EmbeddedBroker
) -> None:
    reply = client.chat.completions.create(
        model="rlhf-loop",
        messages=[{"role": "user", "content": "What is the capital of France? Reply to ann@example.org"}],
        max_tokens=20, temperature=0, user="alice",
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0
    (handle,) = reply.model_extra["feedback"]
    claims = signer_of(serving).verify(handle["feedback_token"])
    assert claims.response_id == handle["response_id"] == f"{reply.id}:0"
    assert (claims.user_id, claims.store, claims.adapter_version) == ("alice", True, None)

    (event,) = events_for(broker, {handle["response_id"]})
    assert event["schema_version"] == 1 and event["user_id"] == "alice"
    assert event["response"] == reply.choices[0].message.content
    assert "ann@example.org" not in event["messages"][0]["content"] and "[EMAIL]" in event["messages"][0]["content"]
    assert event["sampling"]["temperature"] == 0 and event["completion_tokens"] == reply.usage.completion_tokens


def test_streaming_through_the_sdk_ends_with_feedback_handles(
    client: openai.OpenAI, serving: ServingServer, broker: EmbeddedBroker
) -> None:
    stream = client.chat.completions.create(
        model="rlhf-loop", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True, n=2,
    )
    chunks = list(stream)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    last = chunks[-1]
    assert last.choices == []
    handles = last.model_extra["feedback"]
    assert [h["index"] for h in handles] == [0, 1]
    for handle in handles:
        assert signer_of(serving).verify(handle["feedback_token"]).response_id == handle["response_id"]
    events = events_for(broker, {h["response_id"] for h in handles})
    assert sorted(e["response"] for e in events) == sorted(texts.values())
    assert all(e["timings"]["time_to_first_token_s"] > 0 for e in events)


def test_store_false_is_answered_but_never_logged(client: openai.OpenAI, serving: ServingServer, broker: EmbeddedBroker) -> None:
    private = client.chat.completions.create(
        model="rlhf-loop", messages=[{"role": "user", "content": "A private question."}], max_tokens=5, store=False,
    )
    public = client.chat.completions.create(
        model="rlhf-loop", messages=[{"role": "user", "content": "A public question."}], max_tokens=5,
    )
    private_id = private.model_extra["feedback"][0]["response_id"]
    assert signer_of(serving).verify(private.model_extra["feedback"][0]["feedback_token"]).store is False
    # the later public reply arriving proves the private one had its chance to be logged
    records = read_topic(broker, INTERACTIONS, lambda rs: public.model_extra["feedback"][0]["response_id"] in {r["response_id"] for r in rs})
    assert private_id not in {r["response_id"] for r in records}


def test_duel_returns_two_answers_with_their_own_tokens(serving: ServingServer) -> None:
    response = httpx.post(f"{serving.base_url}/v1/chat/duels", json={
        "model": "rlhf-loop", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
        "temperature": 1.0,
    }, timeout=120)
    assert response.status_code == 200
    duel = response.json()
    assert duel["object"] == "chat.duel" and len(duel["answers"]) == 2
    claims = [signer_of(serving).verify(a["feedback"][0]["feedback_token"]) for a in duel["answers"]]
    assert claims[0].response_id != claims[1].response_id
    assert claims[0].duel_id == claims[1].duel_id == duel["id"]
    assert claims[0].prompt_hash == claims[1].prompt_hash


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["rlhf-loop"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"model": "rlhf-loop", "messages": [', 400, "not valid JSON"),
        ('{"model": "rlhf-loop"}', 400, "messages"),
        ('{"model": "rlhf-loop", "messages": []}', 400, "empty"),
        ('{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "nope"),
        ('{"model": "rlhf-loop@v0001", "messages": [{"role": "user", "content": "hi"}]}', 403, "pinning"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400, "temperature"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "top_p": 7}', 400, "top_p"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', 400, "max_tokens"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "n": 0}', 400, "n"),
        # vLLM's LoRA kernels fail on prompt log-probs and take the engine down: refused before they reach it
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 1}', 400, "prompt_logprobs"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "echo": true, "logprobs": true, '
         '"top_logprobs": 2}', 400, "prompt_logprobs"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "' + "word " * 3000 + '"}]}', 400, "context"),
    ],
)
def test_bad_input_is_a_4xx_in_openai_error_shape(serving: ServingServer, body: str, status: int, words: str) -> None:
    response = httpx.post(
        f"{serving.base_url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert set(error) >= {"message", "type", "param", "code"}


def test_wrong_content_type_is_a_4xx(serving: ServingServer) -> None:
    response = httpx.post(f"{serving.base_url}/v1/chat/completions", content="hello", headers={"content-type": "text/plain"})
    assert 400 <= response.status_code < 500
    assert "error" in response.json()
