"""Accepting feedback: verify the tokens, check the request, make the event durable.

Token signing belongs to serving; this module only needs a verifier with the interface below,
so it imports nothing of ours beyond `feedback`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from typing import Callable, Protocol

import structlog
from prometheus_client import Counter

from feedback.errors import Refused
from feedback.events import CorrectionEvent, PairwiseEvent, ThumbEvent
from feedback.producer import DurableProducer
from feedback.protocol import CorrectionCreate, FeedbackAccepted, FeedbackCreate, PairwiseFeedbackCreate
from feedback.ratelimit import RateLimiter

log = structlog.get_logger(__name__)

ACCEPTED = Counter("rlhf_feedback_accepted_total", "Feedback events made durable, by kind.", ["kind"])
REJECTED = Counter("rlhf_feedback_rejected_total", "Feedback requests refused, by reason.", ["reason"])
REPLAYED = Counter("rlhf_feedback_idempotent_replays_total", "Retries answered from the idempotency cache.")

STORAGE_RETRY_AFTER_S = 5.0  # a full disk is an operator's fix or a backlog's drain: not instant, not long

_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c1b8e-3c55-4d8e-9a55-2a8f3b7c9d10")


class InvalidToken(ValueError):
    """A feedback token that is forged, tampered with, malformed or expired."""


class ExpiredToken(InvalidToken):
    """A genuine feedback token past its lifetime (410, where a forged one is 401)."""


class RatedResponse(Protocol):
    """What a verified feedback token says about the response it names."""

    response_id: str
    conversation_id: str
    adapter_version: str | None
    user_id: str | None
    store: bool
    prompt_hash: str
    duel_id: str | None


class FeedbackRefused(Refused):
    """A feedback request that is understood but not accepted; `reason` is its error type and metric label."""

    def __init__(self, status: int, message: str, reason: str, *, param: str | None = None, retry_after_s: float = 0.0):
        super().__init__(status, message, type_=reason, param=param, retry_after_s=retry_after_s)
        self.reason = reason


class FeedbackService:
    def __init__(
        self,
        verify: Callable[[str], RatedResponse],
        producer: DurableProducer,
        topic: str,
        *,
        per_user: RateLimiter,
        per_client: RateLimiter,
        idempotency_cache_size: int = 100_000,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.verify = verify
        self.scrub = scrub  # feedback/redaction.redact when RLHF_REDACT is on: comments are user text
        self.producer = producer
        self.topic = topic
        self.per_user = per_user
        self.per_client = per_client
        self._seen: OrderedDict[str, tuple[str, str]] = OrderedDict()  # idempotency id -> (request hash, event id)
        self._cache_size = idempotency_cache_size

    async def thumb(self, body: FeedbackCreate, *, user: str | None, client: str, idempotency_key: str | None) -> FeedbackAccepted:
        return await self._on_one_response(body, "thumb", user, client, idempotency_key, lambda rated, key: ThumbEvent(
            event_id=self._event_id(key, rated.response_id),
            conversation_id=rated.conversation_id, response_id=rated.response_id,
            adapter_version=rated.adapter_version, user_id=user or rated.user_id, rating=body.rating,
            comment=self._scrubbed(body.comment), reasons=list(body.reasons),
        ))

    async def correction(self, body: CorrectionCreate, *, user: str | None, client: str,
                         idempotency_key: str | None) -> FeedbackAccepted:
        return await self._on_one_response(body, "correction", user, client, idempotency_key, lambda rated, key: CorrectionEvent(
            event_id=self._event_id(key, f"correction|{rated.response_id}"),
            conversation_id=rated.conversation_id, response_id=rated.response_id,
            adapter_version=rated.adapter_version, user_id=user or rated.user_id, correction=self.scrub(body.correction),
            comment=self._scrubbed(body.comment), reasons=list(body.reasons),
        ))

    async def pairwise(self, body: PairwiseFeedbackCreate, *, user: str | None, client: str,
                       idempotency_key: str | None) -> FeedbackAccepted:
        a = self._verified(body.feedback_token_a, "feedback_token_a")
        b = self._verified(body.feedback_token_b, "feedback_token_b")
        if a.response_id == b.response_id:
            raise FeedbackRefused(400, "the two tokens name the same response", "same_response")
        if a.prompt_hash != b.prompt_hash:
            raise FeedbackRefused(400, "the two responses answer different prompts; a pairwise choice needs one prompt",
                                  "different_prompts")
        if a.user_id != b.user_id:
            raise FeedbackRefused(403, "the two responses were served to different users", "foreign_token")
        self._check_user(a, user)
        self._limit(user or a.user_id, client)
        if not (a.store and b.store):
            return FeedbackAccepted(id=None, stored=False)
        key = idempotency_key or body.idempotency_key
        event = PairwiseEvent(
            event_id=self._event_id(key, f"{a.response_id}|{b.response_id}"),
            conversation_id=a.conversation_id, response_id_a=a.response_id, response_id_b=b.response_id,
            adapter_version_a=a.adapter_version, adapter_version_b=b.adapter_version, user_id=user or a.user_id,
            choice=body.choice, duel_id=a.duel_id if a.duel_id == b.duel_id else None,
            comment=self._scrubbed(body.comment), reasons=list(body.reasons),
        )
        return await self._accept(event, key, body.model_dump_json(exclude={"idempotency_key"}), "pairwise")

    # -- steps ----------------------------------------------------------------------------------
    async def _on_one_response(self, body: FeedbackCreate | CorrectionCreate, kind: str, user: str | None, client: str,
                               idempotency_key: str | None,
                               event: Callable[[RatedResponse, str | None], ThumbEvent | CorrectionEvent]) -> FeedbackAccepted:
        """Feedback on one response, by its token: verified, the user's own, within the rate, then durable."""
        rated = self._verified(body.feedback_token, "feedback_token")
        self._check_user(rated, user)
        self._limit(user or rated.user_id, client)
        if not rated.store:
            return FeedbackAccepted(id=None, stored=False)
        key = idempotency_key or body.idempotency_key
        return await self._accept(event(rated, key), key, body.model_dump_json(exclude={"idempotency_key"}), kind)

    def _scrubbed(self, comment: str | None) -> str | None:
        return None if comment is None else self.scrub(comment)

    def _verified(self, token: str, param: str) -> RatedResponse:
        try:
            return self.verify(token)
        except InvalidToken as error:
            raise FeedbackRefused(410 if isinstance(error, ExpiredToken) else 401, f"{param}: {error}", "invalid_token",
                                  param=param) from None

    @staticmethod
    def _check_user(rated: RatedResponse, user: str | None) -> None:
        """With authenticated users, a token is only good for the user it was issued to."""
        if user is not None and rated.user_id != user:
            raise FeedbackRefused(403, "this feedback token was issued to another user", "foreign_token")

    def _limit(self, user: str | None, client: str) -> None:
        waits = [self.per_client.take(f"client:{client}")]
        if user is not None:
            waits.append(self.per_user.take(f"user:{user}"))
        wait = max(waits)
        if wait > 0:
            raise FeedbackRefused(429, f"too much feedback; retry in {wait:.0f}s", "rate_limited", retry_after_s=wait)

    @staticmethod
    def _event_id(idempotency_key: str | None, subject: str) -> str:
        """Deterministic for an idempotent request, so a retry on another replica carries the same id
        (and consumers deduplicate it); random otherwise."""
        if idempotency_key is None:
            return uuid.uuid4().hex
        return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{subject}|{idempotency_key}").hex

    async def _accept(self, event: ThumbEvent | PairwiseEvent | CorrectionEvent, key: str | None, request_json: str, kind: str) -> FeedbackAccepted:
        request_hash = hashlib.sha256(request_json.encode()).hexdigest()
        if key is not None and event.event_id in self._seen:
            seen_hash, event_id = self._seen[event.event_id]
            if seen_hash != request_hash:
                raise FeedbackRefused(422, "this idempotency key was already used with a different request",
                                      "idempotency_conflict", param="idempotency_key")
            REPLAYED.inc()
            return FeedbackAccepted(id=event_id, stored=True)
        try:
            await self.producer.persist(self.topic, event)  # 202 only once on disk
        except OSError as error:  # the outbox's disk is full or failing: nothing of this event was kept
            raise FeedbackRefused(503, f"feedback storage is unavailable ({error.strerror or error}); nothing was "
                                       f"stored, retry later", "storage_unavailable",
                                  retry_after_s=STORAGE_RETRY_AFTER_S) from None
        ACCEPTED.labels(kind).inc()
        if key is not None:
            self._seen[event.event_id] = (request_hash, event.event_id)
            while len(self._seen) > self._cache_size:
                self._seen.popitem(last=False)
        return FeedbackAccepted(id=event.event_id, stored=True)
