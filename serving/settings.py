"""Settings of the serving process (`python -m serving`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from feedback.settings import RuntimeSettings


class ServingSettings(RuntimeSettings):
    """Env prefix `RLHF_`, shared with the other processes (see feedback.settings)."""

    host: str = Field(default="127.0.0.1", description="Address the chat API listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the chat API listens on.")
    served_model_name: str = Field(
        default="rlhf-loop", min_length=1, description="Model name clients send and `/v1/models` lists."
    )
    max_model_len: int = Field(default=2048, ge=128, description="Context length (prompt + answer) in tokens.")
    gpu_memory_utilization: float = Field(
        default=0.3, gt=0.0, le=0.95,
        description="Share of accelerator memory vLLM reserves; on CPU, the share of RAM for the KV cache.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Weight and activation dtype of the engine."
    )
    max_loras: int = Field(default=2, ge=1, description="LoRA adapters resident in the engine at once.")
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank the engine accepts.")
    engine_start_timeout_s: float = Field(default=600.0, gt=0, description="Seconds to wait for the engine to start.")
