"""Wire models of the chat API: vLLM's OpenAI request plus the fields that are ours."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest


MAX_USER_CHARS = 256
MAX_STOP_CHARS = 256
ROLES = ("system", "developer", "user", "assistant", "tool", "function")  # OpenAI's; anything else is a 400 there too


class ChatRequest(ChatCompletionRequest):
    """OpenAI chat completion request. `store` is OpenAI's field: false = never used for training."""

    store: bool = Field(default=True, description="False: answer, but never log this exchange for training.")
    # bounded: each lands in the interaction record, which must fit a Kafka message
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS, description="The end user's id, at most 256 characters.")

    @field_validator("messages")
    @classmethod
    def _known_roles(cls, value: list) -> list:
        for i, message in enumerate(value):
            role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
            if role not in ROLES:
                raise ValueError(f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}")
            if isinstance(message, dict):
                # OpenAI's types declare parts as Iterable: pydantic hands some (an empty list) over as a one-shot
                # iterator, which the engine would use up before we log the message, and which cannot be copied
                for key in ("content", "tool_calls"):
                    if message.get(key) is not None and not isinstance(message[key], (str, list, dict)):
                        message[key] = list(message[key])
        return value

    @model_validator(mode="after")
    def _no_prompt_logprobs(self) -> "ChatRequest":
        # vLLM's LoRA logits kernels fail on the prompt's log-probs (on CPU: a shape error in the worker that
        # kills the engine, so one request would stop the replica for everyone); this server does not offer them
        if self.prompt_logprobs is not None or (self.echo and self.top_logprobs):
            raise ValueError("prompt_logprobs (and echo with top_logprobs) are not supported by this server")
        return self

    @field_validator("stop")
    @classmethod
    def _short_stop_sequences(cls, value: str | list[str] | None) -> str | list[str] | None:
        if any(len(sequence) > MAX_STOP_CHARS for sequence in ([value] if isinstance(value, str) else value or [])):
            raise ValueError(f"each stop sequence may have at most {MAX_STOP_CHARS} characters")
        return value


class FeedbackHandle(BaseModel):
    """What a client needs to rate one choice of a reply."""

    index: int = Field(description="The choice this handle rates.")
    response_id: str
    feedback_token: str
    adapter_version: str | None


class DuelResponse(BaseModel):
    """Two answers to one prompt from two policies; rate them with POST /v1/feedback/pairwise."""

    id: str
    object: str = "chat.duel"
    answers: list[dict[str, Any]] = Field(description="Two chat.completion objects, each with its own `feedback`.")
