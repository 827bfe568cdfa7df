"""The chat API on the real vLLM engine, through the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ServingServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(serving: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serving.base_url}/v1", api_key="unused", max_retries=0)


def test_health_and_readiness(serving: ServingServer) -> None:
    assert httpx.get(f"{serving.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{serving.base_url}/readyz").status_code == 200


def test_prepared_model_answers_a_chat_request(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="rlhf-loop",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0


def test_streaming_through_the_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="rlhf-loop", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["rlhf-loop"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"model": "rlhf-loop", "messages": [', 400, "not valid JSON"),
        ('{"model": "rlhf-loop"}', 400, "messages"),
        ('{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "nope"),
        ('{"model": "rlhf-loop", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}', 400, "temperature"),
    ],
)
def test_bad_input_is_a_4xx_in_openai_error_shape(serving: ServingServer, body: str, status: int, words: str) -> None:
    response = httpx.post(
        f"{serving.base_url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"]
    assert set(error) >= {"message", "type", "param", "code"}
