"""``creditgate accounts ...`` and ``creditgate keys ...``: the admin API for the host's shell.

The commands are the entries of ``gateway.admin.operations`` that name one, called as the
``CLI`` front end: the flags given become the API's request (path, query, body), so the
checks and messages are the API's, and ``--json`` prints the API's JSON; tables otherwise,
a list's table followed by how to ask for its next page when there is one.
Talks to Redis and the store directly (no admin token: whoever runs it has the settings).
Exit codes: 0 done, 1 not found / invalid / conflict / unavailable, 2 usage (argparse).
Changes are attributed ``"cli: <reason>"`` in the ledger.

Every write sends an Idempotency-Key, as the API's clients may: ``--idempotency-key K``, or a
new one per command. When Redis or the store failed under a write, whether it was applied is
unknown: the message names the key, and the same command with it applies it at most once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gateway.admin.idempotency import Outcome
from gateway.admin.operations import CLI, OPERATIONS, Call, Command, Flag, Operation, Part
from gateway.errors import CreditgateError, Unavailable
from gateway.services import open_services
from gateway.settings import Settings

GROUPS = {
    "accounts": "create, show and change accounts",
    "keys": "create, list, limit and revoke API keys",
}


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    actions: dict[str, Any] = {}
    for group, summary in GROUPS.items():
        parser = sub.add_parser(group, help=summary)
        actions[group] = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for operation in OPERATIONS:
        command = operation.command
        if command is None:
            continue
        p = actions[command.group].add_parser(command.action, parents=[common], help=command.help)
        for flag in command.flags:
            _add(p, flag)
        if operation.writes:
            p.add_argument(
                "--idempotency-key",
                metavar="KEY",
                help="retry a command with the same KEY within 24 h: applied once (default: new)",
            )
        _bind(p, operation, command)


CLEAR = object()
"""The value of a ``--no-...`` flag: the field is sent as null (no limit)."""


def _add(parser: argparse.ArgumentParser, flag: Flag) -> None:
    if flag.positional:
        parser.add_argument(flag.name, **flag.options)
        return
    if flag.clears is None:
        parser.add_argument(flag.flag, dest=flag.name, **flag.options)
        return
    either = parser.add_mutually_exclusive_group()
    either.add_argument(flag.flag, dest=flag.name, **flag.options)
    either.add_argument(
        f"--{flag.clears}",
        dest=flag.name,
        action="store_const",
        const=CLEAR,
        help=f"remove the limit {flag.flag} sets",
    )


def _bind(parser: argparse.ArgumentParser, operation: Operation, command: Command) -> None:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        call = call_of(command, args)
        if operation.writes:
            given = args.idempotency_key
            key = "cli-" + secrets.token_urlsafe(16) if given is None else given
            call = replace(call, idempotency_key=key)
        outcome = asyncio.run(_perform(operation, call, settings))
        if outcome is None:
            return 1
        _print(outcome, command, args)
        return 0

    parser.set_defaults(run=run)


def call_of(command: Command, args: argparse.Namespace) -> Call:
    """The API's request from the flags that were given, so validation speaks the same."""
    parts: dict[Part, dict[str, Any]] = {"path": {}, "query": {}, "body": {}}
    for flag in command.flags:
        value = getattr(args, flag.name)
        if value is CLEAR:
            parts[flag.part][flag.name] = None
        elif value is not None:
            parts[flag.part][flag.name] = value

    async def body() -> dict[str, Any]:
        return parts["body"]

    return Call(CLI, path=parts["path"], query=parts["query"], body=body)


async def _perform(operation: Operation, call: Call, settings: Settings) -> Outcome | None:
    """The operation's outcome; None when it failed, said on stderr."""
    try:
        services = open_services(settings)
    except CreditgateError as exc:
        print(f"creditgate: {exc.message}", file=sys.stderr)
        return None
    try:
        return await operation.perform(services, call)
    except CreditgateError as exc:
        print(f"creditgate: {exc.code}: {exc.message}", file=sys.stderr)
        if isinstance(exc, Unavailable) and call.idempotency_key is not None:
            print(
                "creditgate: it may or may not have been applied; to apply it at most once, "
                f"retry with --idempotency-key {shlex.quote(call.idempotency_key)}",
                file=sys.stderr,
            )
        return None
    finally:
        await services.close()


def _print(outcome: Outcome, command: Command, args: argparse.Namespace) -> None:
    printable = outcome.answer
    if outcome.replayed:
        print(
            "creditgate: the first answer to this key, replayed: nothing changed", file=sys.stderr
        )
    if args.json:
        print(json.dumps(printable, indent=2))
        return
    print(_render(printable))
    following = printable.get("next")
    if isinstance(following, str):
        print(f"\nnext: {following}  (the next page: {_next_page(command, args, following)})")


def _next_page(command: Command, args: argparse.Namespace, following: str) -> str:
    """The same command again, its paging flag set to the list's ``next``."""
    words = ["creditgate", command.group, command.action]
    for flag in command.flags:
        value = following if flag.pages else getattr(args, flag.name)
        if value is not None:
            words += [str(value)] if flag.positional else [flag.flag, str(value)]
    return shlex.join(words)


def _render(printable: dict[str, Any]) -> str:
    """Human output: an account as aligned fields, lists as tables, a new key called out."""
    parts: list[str] = []
    account = printable.get("account")
    if isinstance(account, dict):
        fields = {k: v for k, v in account.items() if k != "keys"}
        parts.append(_fields(fields))
        if "keys" in account:
            parts.append("\nkeys:\n" + _table(account["keys"]))
    if "accounts" in printable:
        parts.append(_table(printable["accounts"]))
    if "keys" in printable:
        parts.append(_table(printable["keys"]))
    if "key" in printable:
        parts.append(_fields(printable["key"]))
    if "apiKey" in printable:
        parts.append(
            f"\napi key (shown once, store it now): {printable['apiKey']}\n"
            f"key id: {printable['keyId']}"
        )
    elif "keyId" in printable:
        parts.append(
            "\napi key: not shown again (it was shown once, by the first answer)\n"
            f"key id: {printable['keyId']} (revoke it and create another if it was lost)"
        )
    return "\n".join(p for p in parts if p)


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value) or "-"
    return str(value)


def _fields(values: dict[str, Any]) -> str:
    width = max((len(k) for k in values), default=0)
    return "\n".join(f"{k.ljust(width)}  {_text(v)}" for k, v in values.items())


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    headers = list(dict.fromkeys(h for row in rows for h in row))  # some rows have more
    cells = [[_text(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for c in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return "\n".join(lines)
