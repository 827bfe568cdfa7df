"""Settings as operators see them: env var names, one-line errors, the README table."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from feedback.settings import RuntimeSettings, env_name
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


def settings_table() -> str:
    """Markdown table of every setting, generated from the settings classes; a nested model (a learner's
    hyperparameters) gives a row per field, RLHF_PPO__STEPS."""
    lines = ["| env var | default | used by | meaning |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for used_by, settings_class in SETTINGS_CLASSES:
        for name, field in settings_class.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            nested = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
            if nested is not None:
                lines.append(f"| `{env_name(settings_class, name)}` | | {used_by} | {field.description} |")
                lines += [f"| `{env_name(settings_class, name, sub)}` | `{inner.default}` | {used_by} | {inner.description} |"
                          for sub, inner in nested.model_fields.items()]
                continue
            if field.default_factory is not None:
                default = str(field.default_factory()).replace(str(Path.home()), "~")
            else:
                default = "" if field.default is None else str(field.default)
            lines.append(f"| `{env_name(settings_class, name)}` | `{default}` | {used_by} | {field.description} |")
    return "\n".join(lines)


def between_markers(text: str, start: str, end: str, body: str) -> str:
    """`text` with what lies between the `start` and `end` marker lines replaced by `body` (the README's
    generated tables)."""
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def readme_with_table(readme: str) -> str:
    return between_markers(readme, README_START, README_END, settings_table())

