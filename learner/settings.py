"""Settings of the learner process (`python -m learner`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from feedback.settings import RuntimeSettings


class LearnerSettings(RuntimeSettings):
    """Env prefix `RLHF_`, shared with the other processes (see feedback.settings)."""

    consumer_group: str = Field(default="rlhf-learner", min_length=1, description="Kafka consumer group of the learner.")
    ingest_batch_size: int = Field(default=500, ge=1, description="Most records stored (and committed) per poll.")
    learner_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the learner's Prometheus /metrics on loopback; 0: off."
    )
    ingest_poll_ms: int = Field(default=1000, ge=10, description="Longest wait for new records in one poll, in ms.")

    min_new_feedback: int = Field(default=50, ge=1, description="New ratings that start a training cycle.")
    max_interval_s: float = Field(
        default=3600, gt=0, description="A cycle also starts this long after the last one, if any new rating arrived."
    )
    max_feedback_wait_s: float = Field(
        default=3600, gt=0, description="How long a rating waits for its interaction before it is dropped."
    )
    max_examples_per_user: int = Field(default=200, ge=1, description="Per-user cap on examples in one refresh.")
    prompt_file: Path | None = Field(default=None, description="Extra PPO prompts: JSON Lines of {\"prompt\": ...}.")

    @property
    def dataset_path(self) -> Path:
        return self.home / "learner" / "events.sqlite"

    @property
    def learner_dir(self) -> Path:
        return self.home / "learner"
