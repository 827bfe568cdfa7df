"""The feedback HTTP routes; serving mounts them and puts a FeedbackService on `app.state.feedback`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from feedback.protocol import FeedbackAccepted, FeedbackCreate, PairwiseFeedbackCreate
from feedback.service import REJECTED, FeedbackRefused

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


async def _accept(request: Request, submit) -> JSONResponse:
    """Run `submit(user=..., client=...)`: 202 with the receipt once durable; a refusal is raised on to
    serving's one handler of `Refused`, counted here by reason."""
    user = request.app.state.authenticated_user(request)
    client = request.client.host if request.client else "unknown"
    try:
        accepted = await submit(user=user, client=client)
    except FeedbackRefused as error:
        REJECTED.labels(error.reason).inc()
        raise
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted)
async def thumb(body: FeedbackCreate, request: Request, idempotency_key: IdempotencyKey = None):
    """Rate one response up or down by its feedback token. 202 once the event is durable.

    Rating the same response again replaces the earlier rating (latest wins, applied by the learner).
    """
    return await _accept(request, lambda **who: request.app.state.feedback.thumb(body, idempotency_key=idempotency_key, **who))


@router.post("/v1/feedback/pairwise", status_code=202, response_model=FeedbackAccepted)
async def pairwise(body: PairwiseFeedbackCreate, request: Request, idempotency_key: IdempotencyKey = None):
    """Pick the better of two answers to one prompt (a, b, tie, both_bad) by their two tokens."""
    return await _accept(request, lambda **who: request.app.state.feedback.pairwise(
        body, idempotency_key=idempotency_key, **who))
