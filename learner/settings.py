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

    @property
    def dataset_path(self) -> Path:
        return self.home / "learner" / "events.sqlite"
