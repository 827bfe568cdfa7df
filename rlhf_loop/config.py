"""Settings as operators see them: env var names, one-line errors, the README table."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from feedback.settings import RuntimeSettings
from learner.settings import LearnerSettings
from rlhf_loop.simulation import SimulationSettings
from serving.settings import ServingSettings

SETTINGS_CLASSES: list[tuple[str, type[BaseSettings]]] = [
    ("all", RuntimeSettings),
    ("serving", ServingSettings),
    ("learner", LearnerSettings),
    ("simulation", SimulationSettings),
]
README_START, README_END = "<!-- settings:start -->", "<!-- settings:end -->"


def env_name(settings_class: type[BaseSettings], field: str) -> str:
    return f"{settings_class.model_config.get('env_prefix', '')}{field}".upper()


def describe_error(settings_class: type[BaseSettings], error: ValidationError) -> str:
    """One line naming the env var, what is wrong, and the value given."""
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        given = item.get("input")
        value = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{env_name(settings_class, field)}: {message}{value}")
    return "invalid setting " + "; ".join(problems)


def load_settings(settings_class: type[BaseSettings], **overrides: object) -> BaseSettings:
    """Settings from env + flags (None: not given); a bad value raises SystemExit with a one-line message."""
    try:
        return settings_class(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        print(f"rlhf-loop: {describe_error(settings_class, error)}", file=sys.stderr)
        raise SystemExit(2) from None


def settings_table() -> str:
    """Markdown table of every setting, generated from the settings classes."""
    lines = ["| env var | default | used by | meaning |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for used_by, settings_class in SETTINGS_CLASSES:
        for name, field in settings_class.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            if field.default_factory is not None:
                default = str(field.default_factory()).replace(str(Path.home()), "~")
            else:
                default = "" if field.default is None else str(field.default)
            lines.append(f"| `{env_name(settings_class, name)}` | `{default}` | {used_by} | {field.description} |")
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    head, _, rest = readme.partition(README_START)
    _, _, tail = rest.partition(README_END)
    return f"{head}{README_START}\n{settings_table()}\n{README_END}{tail}"

