"""The feedback HTTP routes; serving mounts them and puts a FeedbackService on `app.state.feedback`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from feedback.protocol import FeedbackAccepted, FeedbackCreate, PairwiseFeedbackCreate
from feedback.service import REJECTED, FeedbackRefused
from feedback.ratelimit import retry_after_header

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def _refused(error: FeedbackRefused) -> JSONResponse:
    REJECTED.labels(error.reason).inc()
    headers = {"Retry-After": retry_after_header(error.retry_after_s)} if error.status == 429 else None
    return JSONResponse(
        status_code=error.status, headers=headers,
        content={"error": {"message": error.message, "type": error.reason, "param": error.param, "code": error.status}},
    )


def _who(request: Request) -> tuple[str | None, str]:
    """(authenticated user or None, client address) as the app resolved them."""
    return request.app.state.authenticated_user(request), request.client.host if request.client else "unknown"


@router.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted)
async def thumb(body: FeedbackCreate, request: Request, idempotency_key: IdempotencyKey = None):
    """Rate one response up or down by its feedback token. 202 once the event is durable.

    Rating the same response again replaces the earlier rating (latest wins, applied by the learner).
    """
    user, client = _who(request)
    try:
        accepted = await request.app.state.feedback.thumb(body, user=user, client=client, idempotency_key=idempotency_key)
    except FeedbackRefused as error:
        return _refused(error)
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.post("/v1/feedback/pairwise", status_code=202, response_model=FeedbackAccepted)
async def pairwise(body: PairwiseFeedbackCreate, request: Request, idempotency_key: IdempotencyKey = None):
    """Pick the better of two answers to one prompt (a, b, tie, both_bad) by their two tokens."""
    user, client = _who(request)
    try:
        accepted = await request.app.state.feedback.pairwise(body, user=user, client=client, idempotency_key=idempotency_key)
    except FeedbackRefused as error:
        return _refused(error)
    return JSONResponse(accepted.model_dump(), status_code=202)
