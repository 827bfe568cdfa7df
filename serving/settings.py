"""Settings of the serving process (`python -m serving`)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, SecretStr, model_validator

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
        description="Share of accelerator memory vLLM reserves (on a GPU; on CPU see RLHF_KV_CACHE_MEMORY).",
    )
    kv_cache_memory: ByteSize | None = Field(
        default=None,
        description=(
            "KV cache size (vLLM's --kv-cache-memory-bytes: 512MiB, 2GiB, ...); set, it replaces "
            "RLHF_GPU_MEMORY_UTILIZATION. Unset: 1GiB on CPU, where a share counts against the NUMA node's "
            "RAM and fails when other processes hold much of it; the share on a GPU."
        ),
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description=(
            "Weight and activation dtype of the engine. auto: bfloat16 on a GPU or a CPU that computes it natively "
            "(oneDNN's check: AVX-512 or AMX), else float32, where vLLM's CPU kernels emulate bfloat16 many times slower."
        ),
    )
    max_loras: int = Field(default=2, ge=1, description="LoRA adapters resident in the engine at once.")
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank the engine accepts.")
    engine_start_timeout_s: float = Field(default=600.0, gt=0, description="Seconds to wait for the engine to start.")
    environment: Literal["development", "production"] = Field(
        default="development", description="`production` refuses to start without RLHF_FEEDBACK_TOKEN_SECRET."
    )
    feedback_token_secret: SecretStr | None = Field(
        default=None,
        description=(
            "HMAC key of feedback tokens, shared by all replicas. Unset in development: a random key kept in "
            "RLHF_HOME/secrets/feedback-token.key."
        ),
    )
    feedback_token_previous_secrets: SecretStr | None = Field(
        default=None,
        description=(
            "Earlier RLHF_FEEDBACK_TOKEN_SECRETs, comma-separated: tokens they signed are still accepted (new ones "
            "are signed with RLHF_FEEDBACK_TOKEN_SECRET). Rotation: move the old secret here, set the new one, and "
            "drop the old one after RLHF_FEEDBACK_TOKEN_TTL_S."
        ),
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Operator bearer token of the admin API (/admin/v1). Unset: the admin API refuses every call.",
    )
    feedback_token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long a feedback token stays valid.")
    redact: bool = Field(default=True, description="Mask e-mail addresses, phone numbers, keys, private-key blocks and "
                                                         "passwords in URLs in logged text: prompts, answers, stop "
                                                         "sequences and feedback comments.")
    allow_adapter_pinning: bool = Field(
        default=False, description="Let a request pin an adapter by model name `<served>@<version>` (evaluation)."
    )
    adapter_poll_s: float = Field(default=0.5, gt=0, description="How often serving reads the registry pointer.")
    adapter_stale_s: float = Field(
        default=60.0, gt=0, description="`/readyz` fails (503) when the registry pointer could not be read for this "
                                        "long, or a version it names has failed to load for this long: the replica "
                                        "no longer follows moves (rollbacks included).")
    user_header: str | None = Field(
        default=None,
        description=(
            "Header carrying the authenticated user id, set by your auth proxy (e.g. X-Forwarded-User). Set: "
            "chat is attributed to it, a feedback token is only accepted from the user it was issued to, and chat "
            "or feedback without the header is refused (401)."
        ),
    )
    feedback_per_user_per_minute: float = Field(default=60, gt=0, description="Sustained feedback rate allowed per user.")
    feedback_per_client_per_minute: float = Field(default=600, gt=0, description="Sustained feedback rate per client address.")
    feedback_burst: int = Field(default=20, ge=1, description="Feedback requests allowed at once before the rate applies.")
    max_request_bytes: ByteSize = Field(
        default="512KiB", validate_default=True,
        description="Largest request body accepted (413 beyond): an interaction record must fit a Kafka message.",
    )
    outbox_dir: Path | None = Field(
        default=None, description="Outbox of interaction events. Unset: RLHF_HOME/outbox/serving-<port>."
    )

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> "ServingSettings":
        if self.environment == "production" and self.feedback_token_secret is None:
            raise ValueError("RLHF_FEEDBACK_TOKEN_SECRET must be set when RLHF_ENVIRONMENT=production")
        for name, secret in (("RLHF_FEEDBACK_TOKEN_SECRET", self.feedback_token_secret), ("RLHF_ADMIN_TOKEN", self.admin_token)):
            if secret is not None and len(secret.get_secret_value()) < 16:
                raise ValueError(f"{name} must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return self

    @property
    def interaction_outbox_dir(self) -> Path:
        return self.outbox_dir or self.home / "outbox" / f"serving-{self.port}"

    def previous_token_keys(self) -> list[bytes]:
        """Keys that verify, but no longer sign, feedback tokens (rotation)."""
        given = self.feedback_token_previous_secrets.get_secret_value() if self.feedback_token_previous_secrets else ""
        return [key.strip().encode() for key in given.split(",") if key.strip()]

    def token_key(self) -> bytes:
        """The feedback-token key: the configured secret, or (development) one kept on disk."""
        if self.feedback_token_secret is not None:
            return self.feedback_token_secret.get_secret_value().encode()
        path = self.home / "secrets" / "feedback-token.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)  # atomic: the first writer wins, every other process reads its key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()
