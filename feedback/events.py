"""The event contract: what serving writes to Kafka and the learner reads.

JSON on the wire, one pydantic model per event type, each with `schema_version`. A consumer
rejects a version it does not know (loudly, counted) instead of guessing. Records are keyed by
conversation so one conversation stays in order within its partition.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    """Fields every event carries; `event_id` is what consumers deduplicate on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_event_id)
    occurred_at: datetime = Field(default_factory=utc_now)

    def kafka_key(self) -> bytes:
        raise NotImplementedError

    def to_wire(self) -> bytes:
        return self.model_dump_json().encode()


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_to_first_token_s: float | None = Field(description="From request received to the first output token.")
    total_s: float = Field(description="From request received to the last output token.")


class InteractionEvent(Event):
    """One answer served to one request (one per choice when n > 1)."""

    event_type: Literal["interaction"] = "interaction"
    response_id: str = Field(description="What feedback names: `<completion id>:<choice index>`.")
    conversation_id: str = Field(description="The Kafka key: keeps one conversation in order.")
    user_id: str | None
    model: str = Field(description="The served model name the client asked for.")
    adapter_version: str | None = Field(description="Registry version of the LoRA that answered; None: the base model.")
    messages: list[dict[str, Any]] = Field(description="The prompt messages, redacted if redaction is on.")
    response: str = Field(description="The answer text, redacted if redaction is on.")
    finish_reason: str | None
    sampling: dict[str, Any] = Field(description="Sampling parameters as the client sent them.")
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    duel_id: str | None = Field(default=None, description="Set when the answer is one side of a duel.")

    def kafka_key(self) -> bytes:
        return self.conversation_id.encode()


class ThumbEvent(Event):
    """A thumb up or down on one response. Latest wins per (user, response): consumers keep the
    newest `occurred_at`, so a changed mind replaces the first rating instead of doubling it."""

    event_type: Literal["thumb"] = "thumb"
    conversation_id: str
    response_id: str
    adapter_version: str | None
    user_id: str | None
    rating: Literal["up", "down"]
    comment: str | None = None
    reasons: list[str] = Field(default_factory=list)

    def kafka_key(self) -> bytes:
        return self.conversation_id.encode()


class PairwiseEvent(Event):
    """A choice between two answers to the same prompt."""

    event_type: Literal["pairwise"] = "pairwise"
    conversation_id: str
    response_id_a: str
    response_id_b: str
    adapter_version_a: str | None
    adapter_version_b: str | None
    user_id: str | None
    choice: Literal["a", "b", "tie", "both_bad"]
    duel_id: str | None = None
    comment: str | None = None
    reasons: list[str] = Field(default_factory=list)

    def kafka_key(self) -> bytes:
        return self.conversation_id.encode()


class CorrectionEvent(Event):
    """A user's better answer to one response ("suggest a better answer", LangSmith's correction): the
    learner trains on it as a demonstration and as a pair (correction over the served answer). Latest
    wins per (user, response), like a thumb."""

    event_type: Literal["correction"] = "correction"
    conversation_id: str
    response_id: str
    adapter_version: str | None
    user_id: str | None
    correction: str = Field(min_length=1, description="The better answer, redacted if redaction is on.")
    comment: str | None = None
    reasons: list[str] = Field(default_factory=list)

    def kafka_key(self) -> bytes:
        return self.conversation_id.encode()


class ForgetEvent(Event):
    """A user's deletion (`rlhf-loop feedback forget --user ID`): consumers drop every event of that
    user they hold and every one that arrives later; exports leave them out."""

    event_type: Literal["forget"] = "forget"
    user_id: str = Field(min_length=1)

    def kafka_key(self) -> bytes:
        return self.user_id.encode()


FEEDBACK_KINDS = ("thumb", "pairwise", "correction")  # the event types that rate an answer (what a cycle learns from)

AnyEvent = Annotated[Union[InteractionEvent, ThumbEvent, PairwiseEvent, CorrectionEvent, ForgetEvent],
                     Field(discriminator="event_type")]
_ANY_EVENT: TypeAdapter[InteractionEvent | ThumbEvent | PairwiseEvent | CorrectionEvent | ForgetEvent] = TypeAdapter(AnyEvent)


class UnknownSchemaVersion(ValueError):
    """A record written by a newer (or foreign) producer: rejected, never guessed at."""


def parse_event(raw: bytes) -> InteractionEvent | ThumbEvent | PairwiseEvent | CorrectionEvent | ForgetEvent:
    """Decode one Kafka record value. Raises UnknownSchemaVersion or ValueError (malformed)."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"record is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("record is not a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION} (event_id={data.get('event_id')!r})"
        )
    try:
        return _ANY_EVENT.validate_python(data)
    except ValidationError as error:
        raise ValueError(f"record does not match the event contract: {error.errors()[0]['msg']}") from None


def latest_thumbs(events: Iterable[Event]) -> list[ThumbEvent]:
    """The rule "a changed mind replaces, never doubles": one thumb per (user, response), the newest. For an anonymous thumb the answer itself is the
    subject (its feedback token names it): a replayed or changed anonymous thumb replaces, never adds."""
    return _latest(events, ThumbEvent)


def latest_corrections(events: Iterable[Event]) -> list[CorrectionEvent]:
    """The same rule for corrections: a user's newer better answer to a response replaces the older one."""
    return _latest(events, CorrectionEvent)


def _latest(events: Iterable[Event], kind: type) -> list:
    newest: dict[tuple[str | None, str], Event] = {}
    for event in events:
        if isinstance(event, kind):
            key = (event.user_id, event.response_id)
            if key not in newest or event.occurred_at >= newest[key].occurred_at:
                newest[key] = event
    return list(newest.values())
