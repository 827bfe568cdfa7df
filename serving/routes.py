"""The public HTTP routes: health, metrics, models, chat, duels and feedback. Thin: each declares what
it needs (serving/deps.py) and hands the request to its service; refusals are `Refused` (one handler)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedback.protocol import CorrectionCreate, FeedbackAccepted, FeedbackCreate, PairwiseFeedbackCreate
from feedback.service import REJECTED, FeedbackRefused
from serving.deps import Chat, ClientAddress, CurrentUser, EngineDep, Feedback, Producer, Router, Settings
from serving.protocol import ChatRequest, DuelResponse

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(settings: Settings, adapters: Router, producer: Producer) -> JSONResponse:
    """Readiness: 200 once the engine serves chat; 503 before, when the outbox's threads are down,
    or when this replica has not followed the registry pointer for RLHF_ADAPTER_STALE_S."""
    if adapters is None or producer is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    outbox, lag = producer.health(), adapters.lag_s()
    problems = ([f"the registry pointer is not followed for {lag:.0f}s (see adapters.* logs)"]
                if lag > settings.adapter_stale_s else [])
    problems += [f"the outbox {thread} thread is not running" for thread in ("writer", "sender") if not outbox[thread]]
    return JSONResponse({
        "status": "not ready" if problems else "ready", "problems": problems, "model": settings.served_model_name,
        "active_adapter": adapters.version_of(adapters.active), "canary_adapter": adapters.version_of(adapters.canary),
        "pointer_lag_s": round(lag, 1), "outbox": outbox,
    }, status_code=503 if problems else 200)


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics of the API, the adapters, the outbox and the engine."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def list_models(settings: Settings, engine: EngineDep) -> JSONResponse:
    """The served model (plus loaded adapter versions where pinning is allowed), OpenAI format."""
    payload = await engine.models()
    if not settings.allow_adapter_pinning:
        payload["data"] = [m for m in payload["data"] if m["id"] == settings.served_model_name]
    return JSONResponse(payload)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, user: CurrentUser, chat: Chat) -> Response:
    """OpenAI chat completions, plain or streamed (SSE ending in `data: [DONE]`).

    Each reply carries `feedback`: per choice, a response id and a signed feedback token
    (streams: in the last chunk before `[DONE]`), and the `adapter_version` that answered.
    """
    return await chat.complete(body, request, user)


@router.post("/v1/chat/duels", response_model=DuelResponse)
async def chat_duel(body: ChatRequest, request: Request, user: CurrentUser, chat: Chat) -> Response:
    """Two answers to one prompt from two policies (active vs canary, else two samples)."""
    return await chat.duel(body, request, user)


async def _accepted(submit) -> JSONResponse:
    """202 with the receipt once the event is durable; a refusal is counted by reason and raised on."""
    try:
        accepted = await submit
    except FeedbackRefused as error:
        REJECTED.labels(error.reason).inc()
        raise
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted)
async def thumb(body: FeedbackCreate, user: CurrentUser, client: ClientAddress, feedback: Feedback,
                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Rate one response up or down by its feedback token. 202 once the event is durable.

    Rating the same response again replaces the earlier rating (latest wins, applied by the learner).
    """
    return await _accepted(feedback.thumb(body, user=user, client=client, idempotency_key=idempotency_key))


@router.post("/v1/feedback/pairwise", status_code=202, response_model=FeedbackAccepted)
async def pairwise(body: PairwiseFeedbackCreate, user: CurrentUser, client: ClientAddress, feedback: Feedback,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Pick the better of two answers to one prompt (a, b, tie, both_bad) by their two tokens."""
    return await _accepted(feedback.pairwise(body, user=user, client=client, idempotency_key=idempotency_key))


@router.post("/v1/feedback/correction", status_code=202, response_model=FeedbackAccepted)
async def correction(body: CorrectionCreate, user: CurrentUser, client: ClientAddress, feedback: Feedback,
                     idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Suggest a better answer to one response by its feedback token. 202 once the event is durable.

    The learner trains on it as a demonstration and as a preference (the correction over the served answer);
    correcting the same response again replaces the earlier correction.
    """
    return await _accepted(feedback.correction(body, user=user, client=client, idempotency_key=idempotency_key))
