"""Settings every rlhf-loop process shares: where it keeps state, which model, which Kafka.

One env prefix for the whole product, `RLHF_`; serving and learner subclass this class and
add their own fields, so a variable means the same thing in every process that reads it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
S = TypeVar("S", bound=BaseSettings)


def _default_home() -> Path:
    return Path.home() / ".cache" / "rlhf-loop"


def readable_model_dir(value: Path | None) -> Path | None:
    """A local Hugging Face model directory, or a clear error (settings validators use it)."""
    if value is None:
        return None
    value = value.expanduser()
    if not value.is_dir():
        raise ValueError(f"{value} is not a directory")
    if not os.access(value, os.R_OK | os.X_OK) or not os.access(value / "config.json", os.R_OK):
        raise ValueError(f"{value} is not a readable Hugging Face model directory (no readable config.json)")
    return value


class RuntimeSettings(BaseSettings):
    """Shared by serving, learner and the `rlhf-loop` command."""

    model_config = SettingsConfigDict(env_prefix="RLHF_", extra="ignore", validate_default=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Folder for state: the prepared model, the outbox, the dataset, the registry.",
    )
    model: Path | None = Field(
        default=None,
        description=(
            "A local Hugging Face model directory. Unset: the bundled SmolLM2-135M-Instruct, "
            "prepared under RLHF_HOME/models by `rlhf-loop model prepare`."
        ),
    )
    registry: str | None = Field(
        default=None,
        description=(
            "Adapter registry shared by learner and serving: a directory or an fsspec URL (s3://bucket/registry). "
            "Unset: RLHF_HOME/registry."
        ),
    )
    kafka_bootstrap_servers: str = Field(
        default="",
        description=(
            "Kafka bootstrap servers, comma-separated host:port. Empty: `rlhf-loop up` starts the "
            "embedded Tansu broker on loopback."
        ),
    )
    broker_port: int = Field(
        default=9092, ge=1, le=65535, description="Port of the embedded broker (only when no bootstrap servers are set)."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT", description="How Kafka clients connect; SASL_*: authenticate with RLHF_KAFKA_SASL_USERNAME "
                                         "and _PASSWORD (a Strimzi KafkaUser, see k8s/RUNBOOK.md).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (Strimzi's scram-sha-512 authentication).")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user (the KafkaUser's name).")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password (the KafkaUser's Secret, key `password`).")
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA certificate of the brokers for SSL/SASL_SSL "
                                                                     "(Strimzi: the <cluster>-cluster-ca-cert Secret).")
    interactions_topic: str = Field(default="rlhf.interactions", min_length=1, description="Kafka topic of chat interactions.")
    feedback_topic: str = Field(default="rlhf.feedback", min_length=1, description="Kafka topic of ratings.")
    topic_partitions: int = Field(default=3, ge=1, description="Partitions of each topic when rlhf-loop creates it.")

    @field_validator("model")
    @classmethod
    def _model_is_a_readable_hf_directory(cls, value: Path | None) -> Path | None:
        return readable_model_dir(value)

    def kafka_client(self) -> dict[str, Any]:
        """Keyword arguments of every kafka-python client: where the brokers are and how to log in.
        (Checked here, not at start-up: a process that never talks to Kafka, like `model prepare`,
        needs no login.)"""
        if self.kafka_security_protocol.startswith("SASL") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"RLHF_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs RLHF_KAFKA_SASL_USERNAME "
                             "and RLHF_KAFKA_SASL_PASSWORD")
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            config.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                          sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        if self.kafka_ssl_cafile is not None:
            config["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return config

    @property
    def model_dir(self) -> Path:
        """The model every process loads: RLHF_MODEL, or the prepared bundled model."""
        return self.model or self.home / "models" / BUNDLED_MODEL_NAME

    @property
    def registry_url(self) -> str:
        return self.registry or str(self.home / "registry")

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> list[str]:
        if self.embedded_broker:
            return [f"127.0.0.1:{self.broker_port}"]
        return [server.strip() for server in self.kafka_bootstrap_servers.split(",") if server.strip()]


def env_name(settings_class: type[BaseSettings], *loc: str | int) -> str:
    """The env var of a field, nested fields joined by `__` (RLHF_PPO__STEPS)."""
    return f"{settings_class.model_config.get('env_prefix', '')}{'__'.join(map(str, loc))}".upper()


def describe_error(settings_class: type[BaseSettings], error: ValidationError, flags: bool = False) -> str:
    """One line naming each bad setting (its env var, or its flag), what is wrong, and the value given."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]] or ["?"]
        name = f"--{'.'.join(loc)}" if flags else env_name(settings_class, *loc)
        given = item.get("input")
        value = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}{value}")
    return "invalid setting " + "; ".join(problems)


def load_settings(settings_class: type[S], cli_args: list[str] | None = None, prog: str | None = None,
                  **overrides: object) -> S:
    """Settings from env + overrides (None: not given), or + command-line flags (`--ppo.steps 10`, pydantic-settings'
    own parser) when `cli_args` is given; a bad value raises SystemExit(2) with a one-line message."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        if cli_args is None:
            return settings_class(**given)
        return settings_class(_cli_parse_args=cli_args, _cli_prog_name=prog, **given)
    except ValidationError as error:
        print(f"{prog or 'rlhf-loop'}: {describe_error(settings_class, error, flags=cli_args is not None)}",
              file=sys.stderr)
        raise SystemExit(2) from None
    except SettingsError as error:  # a value its source cannot parse at all (bad JSON for a nested model)
        cause = f": {error.__cause__}" if error.__cause__ else ""
        print(f"{prog or 'rlhf-loop'}: invalid setting, {error}{cause}", file=sys.stderr)
        raise SystemExit(2) from None
