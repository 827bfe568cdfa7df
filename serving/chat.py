"""The chat service: routes a request to its adapter, runs it on vLLM, attaches feedback handles
and logs the interaction, off the response path.

vLLM does the OpenAI work (sampling, streaming, usage, validation); this adds what is ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter, Histogram
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse
from vllm.entrypoints.generate.base.protocol import StreamOptions
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

from feedback.errors import Refused
from feedback.events import InteractionEvent, Timings
from feedback.producer import DurableProducer
from serving.adapters import AdapterRouter, Lease, PinningDisabled, UnknownAdapter
from serving.engine import Engine
from serving.protocol import ChatRequest, DuelResponse, FeedbackHandle
from feedback.redaction import redact
from serving.tokens import TokenSigner, prompt_hash

log = structlog.get_logger(__name__)

TTFT = Histogram(
    "rlhf_serving_time_to_first_token_seconds", "Streaming requests: request received to first token.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTPUT_TOKENS = Counter("rlhf_serving_output_tokens_total", "Completion tokens served, by adapter version.", ["adapter"])
INTERACTIONS_LOGGED = Counter("rlhf_serving_interactions_logged_total", "Interaction events handed to the outbox.")
NOT_STORED = Counter("rlhf_serving_interactions_not_stored_total", "Replies not logged because of `store: false`.")

_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed",
                    "presence_penalty", "frequency_penalty")


@dataclass
class Exchange:
    """What one request produced, gathered for its interaction events."""

    body: ChatRequest
    lease: Lease
    received: float
    conversation_id: str
    duel_id: str | None = None
    # ours, not vLLM's: vLLM takes a client's X-Request-Id header as the id, and response ids must be unique
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None


class ChatService:
    def __init__(self, engine: Engine, router: AdapterRouter, signer: TokenSigner, producer: DurableProducer,
                 topic: str, redact_text: bool) -> None:
        self.engine = engine
        self.router = router
        self.signer = signer
        self.producer = producer
        self.topic = topic
        self.redact_text = redact_text

    # -- routes -----------------------------------------------------------------------------------
    async def complete(self, body: ChatRequest, request: Request, user: str | None = None) -> Response:
        """`user`: the user an auth proxy vouched for (RLHF_USER_HEADER); it replaces the body's `user`."""
        body = _attribute(body, user)
        try:
            lease = self.router.lease(body.user, body.model)
        except PinningDisabled as error:
            raise Refused(403, str(error), type_="PermissionDeniedError", param="model") from None
        except UnknownAdapter as error:
            raise Refused(404, str(error), type_="NotFoundError", param="model") from None
        exchange = Exchange(body, lease, time.perf_counter(), conversation_id(body, request))
        if body.stream:
            return await self._stream(exchange, request)
        try:
            result = await self._run(exchange, request)
        finally:
            lease.release()
        if isinstance(result, ErrorResponse):
            return JSONResponse(result.model_dump(), status_code=result.error.code)
        return JSONResponse(self._finish_whole(exchange, result))

    async def duel(self, body: ChatRequest, request: Request, user: str | None = None) -> Response:
        if body.stream:
            raise Refused(400, "duels are not streamed: send `stream: false`", param="stream")
        if body.n not in (None, 1):
            raise Refused(400, "a duel has one answer per side: send `n: 1`", param="n")
        if body.model not in (None, self.router.base_model_name):
            raise Refused(400, f"a duel picks its own policies: send `model: {self.router.base_model_name}`",
                          param="model")
        body = _attribute(body, user)
        duel_id = f"duel-{uuid.uuid4().hex}"
        leases = self.router.lease_pair()
        exchanges = [
            Exchange(body.model_copy(deep=True), lease, time.perf_counter(), conversation_id(body, request), duel_id)
            for lease in leases
        ]
        try:
            results = await asyncio.gather(*(self._run(e, request) for e in exchanges))
        finally:
            for lease in leases:
                lease.release()
        for result in results:
            if isinstance(result, ErrorResponse):
                return JSONResponse(result.model_dump(), status_code=result.error.code)
        answers = [self._finish_whole(e, r) for e, r in zip(exchanges, results)]
        return JSONResponse(DuelResponse(id=duel_id, answers=answers).model_dump())

    # -- engine ------------------------------------------------------------------------------------
    async def _run(self, exchange: Exchange, request: Request):
        body = exchange.body.model_copy(
            update={"model": exchange.lease.model, "request_id": exchange.completion_id.removeprefix("chatcmpl-")}
        )
        return await self.engine.chat(body, request)

    def _finish_whole(self, exchange: Exchange, result: ChatCompletionResponse) -> dict[str, Any]:
        for choice in result.choices:
            exchange.texts[choice.index] = choice.message.content or ""
            exchange.finish[choice.index] = choice.finish_reason
        exchange.prompt_tokens = result.usage.prompt_tokens
        exchange.completion_tokens = result.usage.completion_tokens or 0
        payload = result.model_dump()
        payload["adapter_version"] = exchange.lease.adapter_version
        payload["feedback"] = [h.model_dump() for h in self._settle(exchange)]
        return payload

    async def _stream(self, exchange: Exchange, request: Request) -> Response:
        body = exchange.body
        client_wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        exchange.body = body.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
        try:
            result = await self._run(exchange, request)
        except BaseException:
            exchange.lease.release()
            raise
        if isinstance(result, ErrorResponse):
            exchange.lease.release()
            return JSONResponse(result.model_dump(), status_code=result.error.code)
        return StreamingResponse(self._relay(exchange, result, client_wants_usage), media_type="text/event-stream")

    async def _relay(self, exchange: Exchange, chunks: AsyncIterator[str], client_wants_usage: bool) -> AsyncIterator[str]:
        """Pass vLLM's SSE through, note what was said, and send the feedback handles last."""
        completed = False
        try:
            async for chunk in chunks:
                if not chunk.startswith("data: {"):
                    if chunk.startswith("data: [DONE]"):
                        completed = True
                        yield self._final_chunk(exchange)
                    yield chunk
                    continue
                data = json.loads(chunk[6:])
                for choice in data.get("choices", ()):
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if exchange.first_token_at is None:
                            exchange.first_token_at = time.perf_counter()
                            TTFT.observe(exchange.first_token_at - exchange.received)
                        exchange.texts[choice["index"]] = exchange.texts.get(choice["index"], "") + content
                    if choice.get("finish_reason") is not None:
                        exchange.finish[choice["index"]] = choice["finish_reason"]
                    exchange.texts.setdefault(choice["index"], "")
                if data.get("usage"):
                    exchange.prompt_tokens = data["usage"]["prompt_tokens"]
                    exchange.completion_tokens = data["usage"].get("completion_tokens") or 0
                    if not data.get("choices") and not client_wants_usage:
                        continue  # the usage-only chunk we asked for ourselves
                yield chunk
        finally:
            exchange.lease.release()
            if not completed:
                log.info("chat.stream_aborted", response_id=exchange.completion_id)

    def _final_chunk(self, exchange: Exchange) -> str:
        handles = self._settle(exchange)
        chunk = {
            "id": exchange.completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": exchange.lease.model, "choices": [],
            "adapter_version": exchange.lease.adapter_version, "feedback": [h.model_dump() for h in handles],
        }
        return f"data: {json.dumps(chunk)}\n\n"

    # -- feedback handles and interaction events -----------------------------------------------------
    def _settle(self, exchange: Exchange) -> list[FeedbackHandle]:
        """Sign one feedback token per choice and log one interaction event per choice."""
        body, lease = exchange.body, exchange.lease
        messages = [_plain_message(m) for m in body.messages]
        phash = prompt_hash(messages)
        total = time.perf_counter() - exchange.received
        OUTPUT_TOKENS.labels(lease.adapter_version or "base").inc(exchange.completion_tokens)
        handles = []
        for index in sorted(exchange.texts):
            response_id = f"{exchange.completion_id}:{index}"
            token = self.signer.sign(rid=response_id, c=exchange.conversation_id, av=lease.adapter_version, u=body.user, st=body.store,
                                     ph=phash, d=exchange.duel_id)
            handles.append(FeedbackHandle(index=index, response_id=response_id, feedback_token=token,
                                          adapter_version=lease.adapter_version))
            if not body.store:
                NOT_STORED.inc()
                continue
            scrub = redact if self.redact_text else (lambda text: text)
            event = InteractionEvent(
                response_id=response_id,
                conversation_id=exchange.conversation_id,
                user_id=body.user,
                model=self.router.base_model_name,
                adapter_version=lease.adapter_version,
                messages=[{**m, "content": scrub(m["content"])} for m in messages],
                response=scrub(exchange.texts[index]),
                finish_reason=exchange.finish.get(index),
                sampling=_sampling(body, scrub),
                prompt_tokens=exchange.prompt_tokens,
                # per-choice counts are not reported by vLLM for n > 1; the total goes on each
                completion_tokens=exchange.completion_tokens,
                timings=Timings(
                    time_to_first_token_s=None if exchange.first_token_at is None
                    else exchange.first_token_at - exchange.received,
                    total_s=total,
                ),
                duel_id=exchange.duel_id,
            )
            self.producer.submit(self.topic, event)  # non-blocking; a down broker only grows the outbox
            INTERACTIONS_LOGGED.inc()
        return handles


def _sampling(body: ChatRequest, scrub) -> dict[str, Any]:
    """The request's sampling parameters as logged; stop sequences are user text, so they are scrubbed too."""
    sampling = {k: getattr(body, k) for k in _SAMPLING_FIELDS if getattr(body, k, None) is not None}
    if "stop" in sampling:
        sampling["stop"] = scrub(sampling["stop"]) if isinstance(sampling["stop"], str) else [scrub(s) for s in sampling["stop"]]
    return sampling


def _attribute(body: ChatRequest, user: str | None) -> ChatRequest:
    """An authenticated user (from the trusted header) overrides the `user` field a client sent."""
    return body if user is None else body.model_copy(update={"user": user})


def _plain_message(message: Any) -> dict[str, str]:
    """role + text of a message (parts joined), as logged and hashed."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return {"role": str(message.get("role")), "content": content or ""}


def conversation_id(body: ChatRequest, request: Request) -> str:
    """The Kafka key: the client's X-Conversation-Id, else user + first message (stable per thread)."""
    given = request.headers.get("x-conversation-id")
    if given:
        return given[:200]
    first = _plain_message(body.messages[0]) if body.messages else {}
    seed = json.dumps([body.user, first.get("content")])
    return "conv-" + hashlib.sha256(seed.encode()).hexdigest()[:24]
