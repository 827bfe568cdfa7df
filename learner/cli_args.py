"""Command-line flags generated from the hyperparameter dataclasses, so no option is written twice."""

from __future__ import annotations


def add_dataclass_arguments(parser, config_class, prefix: str) -> None:
    """`--<prefix>.<field>` flags generated from a hyperparameter dataclass and its help strings."""
    import dataclasses
    import typing

    group = parser.add_argument_group(f"{prefix} hyperparameters ({config_class.__name__})")
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        kind = hints[item.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        if kind is bool:
            convert = lambda text: text.lower() in ("1", "true", "yes")  # noqa: E731
        elif choices:
            convert = str
        else:
            convert = kind
        group.add_argument(f"--{prefix}.{item.name}", dest=f"{prefix}__{item.name}", type=convert, choices=choices,
                           default=item.default, help=f"{item.metadata.get('help', '')} (default: {item.default})")


def dataclass_from_arguments(args, config_class, prefix: str):
    import dataclasses

    return config_class(**{f.name: getattr(args, f"{prefix}__{f.name}") for f in dataclasses.fields(config_class)})
