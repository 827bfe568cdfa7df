"""Wire models of the chat API: vLLM's OpenAI request plus the fields that are ours."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest


class ChatRequest(ChatCompletionRequest):
    """OpenAI chat completion request. `store` is OpenAI's field: false = never used for training."""

    store: bool = Field(default=True, description="False: answer, but never log this exchange for training.")


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
