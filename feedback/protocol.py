"""Wire models of the feedback API: what a client sends and what it gets back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_COMMENT_CHARS = 2000
MAX_REASONS = 10
MAX_CORRECTION_CHARS = 8000  # about 2,000 tokens: as long as the longest answer a chat here returns


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS, description="Free text, at most 2000 characters.")
    reasons: list[Literal["helpful", "correct", "concise", "unhelpful", "incorrect", "harmful", "verbose", "off_topic", "other"]] = Field(
        default_factory=list, max_length=MAX_REASONS, description="Reason tags."
    )
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Makes a retry a no-op (the `Idempotency-Key` header does the same).",
    )


class FeedbackCreate(_Create):
    """A thumb on one response, named by the feedback token that came with it."""

    feedback_token: str = Field(min_length=1, max_length=4096)
    rating: Literal["up", "down"]


class PairwiseFeedbackCreate(_Create):
    """A choice between two answers to the same prompt, by their two feedback tokens."""

    feedback_token_a: str = Field(min_length=1, max_length=4096)
    feedback_token_b: str = Field(min_length=1, max_length=4096)
    choice: Literal["a", "b", "tie", "both_bad"]


class CorrectionCreate(_Create):
    """A better answer to one response, named by the feedback token that came with it."""

    feedback_token: str = Field(min_length=1, max_length=4096)
    correction: str = Field(min_length=1, max_length=MAX_CORRECTION_CHARS,
                            description="The answer the user would rather have received, at most 8000 characters.")

    @field_validator("correction")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a correction needs some text")
        return value


class FeedbackAccepted(BaseModel):
    """202: the event is durable and will reach Kafka. `stored: false` for a `store: false` reply."""

    id: str | None = Field(description="Event id; the same for a retried idempotent request.")
    object: Literal["feedback"] = "feedback"
    stored: bool
