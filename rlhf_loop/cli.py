"""The `rlhf-loop` command."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from feedback.settings import load_settings


def _fail(message: str) -> int:
    print(f"rlhf-loop: {message}", file=sys.stderr)
    return 2


def cmd_up(args: argparse.Namespace) -> int:
    from feedback.broker import BrokerError, port_is_free
    from feedback.logs import configure_logging
    from rlhf_loop.model import ModelPreparationError
    from rlhf_loop.simulation import SimulationSettings
    from rlhf_loop.supervisor import Supervisor
    from serving.settings import ServingSettings

    settings = load_settings(ServingSettings, port=args.port)
    simulation = load_settings(SimulationSettings, simulate_users=args.simulate_users,
                               simulate_until_tested=args.until_tested or None, simulate_minutes=args.minutes,
                               simulate_report=args.report.resolve() if args.report else None)
    configure_logging("supervisor")
    if not port_is_free(settings.host, settings.port):
        return _fail(f"port {settings.port} is already in use: pass --port with a free port (or set RLHF_PORT)")
    if settings.model is None:
        try:
            _prepare_bundled(settings.model_dir)
        except ModelPreparationError as error:
            return _fail(str(error))
    supervisor = Supervisor(settings, simulation if simulation.simulate_users else None)
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

    settings = load_settings(RuntimeSettings)
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


def _events(args: argparse.Namespace):
    from feedback.export import read_events
    from feedback.settings import RuntimeSettings

    settings = load_settings(RuntimeSettings)
    return read_events(settings.bootstrap_servers, [settings.interactions_topic, settings.feedback_topic],
                       since=args.since, until=args.until, kinds=args.kinds, client_config=settings.kafka_client())


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from feedback.export import write

    fmt = args.format or ("parquet" if args.output.suffix == ".parquet" else "jsonl")
    count = write(_events(args), args.output, fmt)
    print(f"wrote {count} events to {args.output} ({fmt})", file=sys.stderr)
    return 0


def cmd_feedback_stats(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    from feedback.export import summarize

    stats = summarize(_events(args))
    if args.json:
        print(json.dumps(dataclasses.asdict(stats), indent=2))
        return 0
    console = Console()
    console.print("events: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.counts.items())) or "no events")
    thumbs = Table("adapter", "up", "down", "thumb-up rate", title="thumbs (latest per user and response)")
    for version, row in stats.thumbs_by_adapter.items():
        thumbs.add_row(version, str(row["up"]), str(row["down"]), f"{row['up_rate']:.1%}")
    console.print(thumbs)
    duels = Table("a", "b", "a wins", "b wins", "tie", "both bad", "a win rate", title="pairwise choices")
    for row in stats.pairwise:
        rate = "-" if row["a_win_rate"] is None else f"{row['a_win_rate']:.1%}"
        duels.add_row(row["a"], row["b"], *(str(row[k]) for k in ("a_wins", "b_wins", "tie", "both_bad")), rate)
    console.print(duels)
    return 0


def cmd_feedback_forget(args: argparse.Namespace) -> int:
    """A user's deletion: one `forget` event on the feedback topic, acknowledged by every in-sync replica.
    The learner deletes that user's stored events and keeps later ones out; exports leave them out."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from feedback.events import ForgetEvent
    from feedback.settings import RuntimeSettings

    settings = load_settings(RuntimeSettings)
    event = ForgetEvent(user_id=args.user)
    try:
        producer = KafkaProducer(acks="all", client_id="rlhf-forget", **settings.kafka_client())
        try:
            producer.send(settings.feedback_topic, key=event.kafka_key(), value=event.to_wire()).get(timeout=30)
        finally:
            producer.close(timeout=5)
    except KafkaError as error:
        return _fail(f"the forget event did not reach Kafka ({error!r}); nothing changed: run it again")
    print(f"forget event {event.event_id} written: the learner drops this user's events; exports leave them out",
          file=sys.stderr)
    return 0


def _timestamp(text: str):
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r} (e.g. 2026-11-23 or 2026-11-23T12:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _kinds(text: str) -> list[str]:
    from feedback.export import KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(KINDS)} (comma-separated), not {text!r}")
    return kinds


def cmd_learn(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os

    # the report is the one thing on stdout (logs, ours and vLLM's, go to stderr)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

    from feedback.logs import configure_logging
    from learner.cycle import run_cycle
    from learner.settings import LearnerSettings

    # every learner setting as a flag over the environment, hyperparameters included (--ppo.steps 10)
    settings = load_settings(LearnerSettings, cli_args=args.settings, prog="rlhf-loop learn --once")
    configure_logging("learner")
    if not settings.model_dir.is_dir():
        return _fail(f"no model at {settings.model_dir}: run `rlhf-loop model prepare` or set RLHF_MODEL")
    report = run_cycle(settings, settings.policy, settings.reward)
    print(json.dumps(dataclasses.asdict(report), indent=2))
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
    up.add_argument("--simulate-users", type=int, metavar="N", help="also run N simulated users who chat and rate by "
                    "a preference plugin (RLHF_SIMULATE_PREFERENCE); they report whether the loop raised their score")
    up.add_argument("--until-tested", action="store_true", help="with --simulate-users: stop everything once the "
                    "score gain after the first promotion is tested on RLHF_SIMULATE_TEST_ANSWERS answers (or after "
                    "RLHF_SIMULATE_MAX_MINUTES)")
    up.add_argument("--minutes", type=float, help="with --simulate-users: run this long, then stop everything "
                    "(RLHF_SIMULATE_MINUTES; the report tests each promotion against the version it replaced)")
    up.add_argument("--report", type=Path, help="with --simulate-users: where to write the simulation report (JSON)")
    up.set_defaults(func=cmd_up)

    model = commands.add_parser("model", help="the base model").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help="write the bundled SmolLM2-135M-Instruct as safetensors (idempotent)")
    prepare.add_argument("--output", type=Path, help="target directory (default: RLHF_HOME/models/SmolLM2-135M-Instruct)")
    prepare.set_defaults(func=cmd_model_prepare)

    learn = commands.add_parser("learn", help="run one training cycle now on the stored feedback and exit")
    learn.add_argument("--once", action="store_true", required=True, help="one cycle, then exit (the learner "
                       "service runs cycles on its schedule)")
    learn.epilog = ("Any learner setting may follow as a flag, over the environment: RLHF_PPO__STEPS is --ppo.steps, "
                    "RLHF_REWARD__EPOCHS is --reward.epochs, RLHF_GATE_SAMPLES is --gate_samples (`rlhf-loop config` lists them).")
    learn.set_defaults(func=cmd_learn)

    feedback = commands.add_parser("feedback", help="feedback data for product teams").add_subparsers(
        dest="feedback_command", required=True)
    for name, func, helptext in (
        ("export", cmd_feedback_export, "write events to JSON Lines or Parquet"),
        ("stats", cmd_feedback_stats, "counts, thumb-up rate per adapter, pairwise win rates"),
    ):
        sub = feedback.add_parser(name, help=helptext)
        sub.add_argument("--since", type=_timestamp, help="only events at or after this time (ISO 8601, UTC if no zone)")
        sub.add_argument("--until", type=_timestamp, help="only events before this time")
        sub.add_argument("--kinds", type=_kinds, default=["interaction", "thumb", "pairwise", "correction"],
                         help="comma-separated: interaction,thumb,pairwise,correction (default: all)")
        sub.set_defaults(func=func)
        if name == "export":
            sub.add_argument("--output", "-o", type=Path, required=True, help="file to write (.parquet: Parquet)")
            sub.add_argument("--format", choices=["jsonl", "parquet"], help="default: from the file suffix")
        else:
            sub.add_argument("--json", action="store_true", help="print JSON instead of tables")

    forget = feedback.add_parser("forget", help="delete a user's feedback and interactions from the learner's "
                                               "dataset and every later export")
    forget.add_argument("--user", required=True, help="the user id (the `user` field or RLHF_USER_HEADER's value)")
    forget.set_defaults(func=cmd_feedback_forget)

    from rlhf_loop.adapters import add_adapters_parser

    add_adapters_parser(commands)

    config = commands.add_parser("config", help="print every setting with its env var and default")
    config.add_argument("--write-readme", type=Path, metavar="README", help="rewrite the table in this README")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "learn":  # `learn` reads its settings flags with pydantic-settings (cmd_learn)
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.settings = rest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
