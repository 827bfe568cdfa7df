"""`rlhf-loop adapters ...`: what operators do to adapter versions, from a shell.

The same actions as the admin HTTP API (`/admin/v1`), on the registry named by RLHF_REGISTRY;
every move is written to the registry's audit log, and serving follows the pointer.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys


def _registry():
    from feedback.settings import RuntimeSettings
    from learner.registry import Registry
    from feedback.settings import load_settings

    settings = load_settings(RuntimeSettings)
    return Registry.from_settings(settings)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_adapters(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from learner.registry import RegistryError

    registry = _registry()
    try:
        if args.adapters_command == "list":
            rows = [registry.summary(v) for v in registry.versions()]
            if args.json:
                _print_json({"pointer": registry.read_pointer().model_dump(mode="json"), "data": rows})
                return 0
            pointer = registry.read_pointer()
            table = Table(title=f"adapters in {registry.url}  (canary share {pointer.canary_share:.0%})")
            for column in ("version", "role", "gates", "created_at", "parent", "reward_model"):
                table.add_column(column)
            for row in rows:
                table.add_row(*(str(row[c] or "") for c in ("version", "role", "gates", "created_at", "parent", "reward_model")))
            Console().print(table)
        elif args.adapters_command == "show":
            _print_json({**registry.meta(args.version), **registry.summary(args.version)})
        elif args.adapters_command == "diff":
            _print_json(registry.diff(args.version, args.other))
        elif args.adapters_command == "promote":
            _print_json(registry.promote(args.version, actor=args.actor, reason=args.reason, force=args.force,
                                         expected=args.expected_revision).model_dump(mode="json"))
        elif args.adapters_command == "canary":
            _print_json(registry.canary(args.version, args.share, actor=args.actor, reason=args.reason,
                                        force=args.force, expected=args.expected_revision).model_dump(mode="json"))
        elif args.adapters_command == "rollback":
            _print_json(registry.rollback(actor=args.actor, reason=args.reason,
                                          expected=args.expected_revision).model_dump(mode="json"))
        elif args.adapters_command == "reject":
            _print_json(registry.reject(args.version, actor=args.actor, reason=args.reason,
                                        expected=args.expected_revision).model_dump(mode="json"))
    except RegistryError as error:
        print(f"rlhf-loop: {error}", file=sys.stderr)
        return 1
    return 0


def add_adapters_parser(commands) -> None:
    adapters = commands.add_parser("adapters", help="list, inspect, promote, canary, roll back or reject adapter versions")
    sub = adapters.add_subparsers(dest="adapters_command", required=True)
    listing = sub.add_parser("list", help="every version with its role and gate status")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("show", help="one version: lineage, gate report, role").add_argument("version")
    diff = sub.add_parser("diff", help="what differs between two versions (lineage, gates, weights)")
    diff.add_argument("version")
    diff.add_argument("other")

    def action(name: str, helptext: str, *, version: bool = True, force: bool = True) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=helptext)
        if version:
            parser.add_argument("version")
        parser.add_argument("--reason", required=True, help="why: written to the audit log")
        parser.add_argument("--actor", default=f"{getpass.getuser()}@{socket.gethostname()}",
                            help="who: written to the audit log (default: user@host)")
        parser.add_argument("--expected-revision", type=int, default=None,
                            help="apply only if the pointer is still at this revision (see `adapters list --json`)")
        if force:
            parser.add_argument("--force", action="store_true",
                                help="serve it although its gates failed or it was rejected (audited)")
        return parser

    action("promote", "make a version active for everyone (the old one becomes previous)")
    action("canary", "serve a version to a share of users").add_argument(
        "--share", type=float, required=True, help="share of users, sticky per user, in (0, 1]")
    action("rollback", "end the canary if one runs, else make the previous version active", version=False, force=False)
    action("reject", "turn a version down: it leaves the canary and needs --force to serve", force=False)
    adapters.set_defaults(func=cmd_adapters)
