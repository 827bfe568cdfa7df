"""The `rlhf-loop` command."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings


def _fail(message: str) -> int:
    print(f"rlhf-loop: {message}", file=sys.stderr)
    return 2


def _load(settings_class: type[BaseSettings], **overrides: object) -> BaseSettings:
    """Settings from env + flags; a bad value raises SystemExit with a one-line message."""
    from rlhf_loop.config import describe_error

    try:
        return settings_class(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        raise SystemExit(_fail(describe_error(settings_class, error))) from None


def cmd_up(args: argparse.Namespace) -> int:
    from feedback.broker import BrokerError, port_is_free
    from feedback.logs import configure_logging
    from rlhf_loop.model import ModelPreparationError
    from rlhf_loop.supervisor import Supervisor
    from serving.settings import ServingSettings

    settings = _load(ServingSettings, port=args.port)
    configure_logging("supervisor")
    if not port_is_free(settings.host, settings.port):
        return _fail(f"port {settings.port} is already in use: pass --port with a free port (or set RLHF_PORT)")
    if settings.model is None:
        try:
            _prepare_bundled(settings.model_dir)
        except ModelPreparationError as error:
            return _fail(str(error))
    supervisor = Supervisor(settings)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    try:
        return supervisor.run()
    except BrokerError as error:
        return _fail(str(error))


def _prepare_bundled(target: Path) -> Path:
    from rich.console import Console

    from rlhf_loop.model import is_prepared, prepare

    if is_prepared(target):
        return target
    with Console(stderr=True).status(f"preparing the bundled model in {target} (first run only, about a minute)"):
        return prepare(target)


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from feedback.logs import configure_logging
    from feedback.settings import RuntimeSettings
    from rlhf_loop.model import ModelPreparationError

    settings = _load(RuntimeSettings)
    configure_logging("model")
    target = args.output or settings.model_dir
    if settings.model is not None and args.output is None:
        print(f"RLHF_MODEL is set to {settings.model}: nothing to prepare")
        return 0
    try:
        print(_prepare_bundled(target))
    except ModelPreparationError as error:
        return _fail(str(error))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from rlhf_loop.config import readme_with_table, settings_table

    if args.write_readme:
        args.write_readme.write_text(readme_with_table(args.write_readme.read_text()))
    else:
        print(settings_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-loop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run broker (embedded unless Kafka is configured), serving and learner")
    up.add_argument("--port", type=int, help="port of the chat API (default: RLHF_PORT, else 8000)")
    up.set_defaults(func=cmd_up)

    model = commands.add_parser("model", help="the base model").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help="write the bundled SmolLM2-135M-Instruct as safetensors (idempotent)")
    prepare.add_argument("--output", type=Path, help="target directory (default: RLHF_HOME/models/SmolLM2-135M-Instruct)")
    prepare.set_defaults(func=cmd_model_prepare)

    config = commands.add_parser("config", help="print every setting with its env var and default")
    config.add_argument("--write-readme", type=Path, metavar="README", help="rewrite the table in this README")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
