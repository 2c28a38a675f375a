"""``creditgate accounts ...`` and ``creditgate keys ...``: the admin API for the host's shell.

Talks to Redis and the store directly (no admin token: whoever runs it has the settings).
Same checks and messages as the API (gateway.accounts.validation), same JSON with ``--json``;
tables otherwise. Exit codes: 0 done, 1 not found / invalid / conflict / unavailable, 2 usage
(argparse). Changes are attributed ``"cli: <reason>"`` in the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.accounts import operations as accounts
from gateway.accounts import validation
from gateway.admin.views import account_view, key_view, record_view
from gateway.errors import CreditgateError, InvalidRequest
from gateway.services import Services, open_services
from gateway.settings import Settings

ACTOR = "cli"

Action = Callable[[Services, argparse.Namespace], Awaitable[Any]]


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    acc = sub.add_parser("accounts", help="create, show and change accounts")
    acc_sub = acc.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = acc_sub.add_parser("create", parents=[common], help="a new account and its first key")
    p.add_argument("--id", dest="account_id", help="default: acct_<random>")
    p.add_argument("--email")
    p.add_argument("--tier", default="free")
    p.add_argument("--months", type=int, help="subscription length (paid tiers)")
    p.add_argument("--reason")
    _bind(p, _create)

    p = acc_sub.add_parser("show", parents=[common], help="an account's status and keys")
    p.add_argument("account_id", metavar="ID")
    _bind(p, _show)

    p = acc_sub.add_parser("list", parents=[common], help="accounts in the store, by id")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--after", help="list ids after this one")
    _bind(p, _list)

    p = acc_sub.add_parser("grant", parents=[common], help="add bonus credits")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("credits", type=int)
    p.add_argument("--reason", required=True)
    _bind(p, _grant)

    p = acc_sub.add_parser("upgrade", parents=[common], help="subscribe to a paid tier")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("--tier", required=True)
    p.add_argument("--months", type=int, required=True)
    p.add_argument("--reason")
    _bind(p, _upgrade)

    p = acc_sub.add_parser("downgrade", parents=[common], help="back to free")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("--reason")
    _bind(p, _downgrade)

    p = acc_sub.add_parser("renew", parents=[common], help="extend the subscription")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("--months", type=int, required=True)
    p.add_argument("--reason")
    _bind(p, _renew)

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = keys_sub.add_parser("create", parents=[common], help="a new API key (shown once)")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("--name")
    _bind(p, _key_create)

    p = keys_sub.add_parser("list", parents=[common], help="an account's keys")
    p.add_argument("account_id", metavar="ID")
    _bind(p, _key_list)

    p = keys_sub.add_parser("revoke", parents=[common], help="stop a key on every replica")
    p.add_argument("account_id", metavar="ID")
    p.add_argument("key_id", metavar="KEY_ID")
    _bind(p, _key_revoke)


def _bind(parser: argparse.ArgumentParser, action: Action) -> None:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_execute(action, args, settings))

    parser.set_defaults(run=run)


async def _execute(action: Action, args: argparse.Namespace, settings: Settings) -> int:
    try:
        services = open_services(settings)
    except CreditgateError as exc:
        print(f"creditgate: {exc.message}", file=sys.stderr)
        return 1
    try:
        printable = await action(services, args)
    except CreditgateError as exc:
        print(f"creditgate: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await services.close()
    if args.json:
        print(json.dumps(printable, indent=2))
    else:
        print(_render(printable))
    return 0


def _body(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The API's body from the flags that were given, so validation speaks the same."""
    fields = {"account_id": "id"}
    return {fields.get(n, n): getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _reason(reason: str) -> str:
    return accounts.attributed(ACTOR, reason)


async def _create(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    body = _body(args, "account_id", "email", "tier", "months", "reason")
    wanted = validation.create_account(body, services.settings.tiers)
    created = await accounts.create_account(
        services,
        account_id=wanted.account_id,
        email=wanted.email,
        tier=wanted.tier,
        months=wanted.months,
        reason=_reason(wanted.reason or "account created"),
    )
    report = await accounts.account_report(services, created.account_id)
    account = account_view(created.state, report.record, report.keys)
    return {"account": account, "apiKey": created.api_key, "keyId": created.key_id}


async def _show(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    report = await accounts.account_report(services, validation.account_id(args.account_id))
    return {"account": account_view(report.state, report.record, report.keys)}


async def _list(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.limit <= 1000:
        raise InvalidRequest("--limit must be between 1 and 1000")
    after = None if args.after is None else validation.account_id(args.after, field="after")
    records = await accounts.list_accounts(services, limit=args.limit, after=after)
    following = records[-1].account_id if len(records) == args.limit else None
    return {"accounts": [record_view(r) for r in records], "next": following}


async def _grant(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    wanted = validation.grant(_body(args, "credits", "reason"))
    state = await accounts.grant(
        services, account_id, wanted.credits, reason=_reason(wanted.reason)
    )
    return {"account": account_view(state)}


async def _upgrade(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    wanted = validation.upgrade(_body(args, "tier", "months", "reason"), services.settings.tiers)
    state = await accounts.change_tier(
        services,
        account_id,
        "upgrade",
        tier=wanted.tier,
        months=wanted.months,
        reason=_reason(wanted.reason),
    )
    return {"account": account_view(state)}


async def _downgrade(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    wanted = validation.downgrade(_body(args, "reason"))
    state = await accounts.change_tier(
        services, account_id, "downgrade", reason=_reason(wanted.reason)
    )
    return {"account": account_view(state)}


async def _renew(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    wanted = validation.renew(_body(args, "months", "reason"))
    state = await accounts.change_tier(
        services, account_id, "renew", months=wanted.months, reason=_reason(wanted.reason)
    )
    return {"account": account_view(state)}


async def _key_create(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    wanted = validation.create_key(_body(args, "name"))
    key = await accounts.create_key(services, account_id, name=wanted.name)
    return {"apiKey": key.api_key, "keyId": key.key_id, "prefix": key.display_prefix}


async def _key_list(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    keys = await accounts.list_keys(services, validation.account_id(args.account_id))
    return {"keys": [key_view(k) for k in keys]}


async def _key_revoke(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    account_id = validation.account_id(args.account_id)
    key_id = validation.key_id(args.key_id, field="KEY_ID")
    return {"key": key_view(await accounts.revoke_key(services, account_id, key_id))}


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
    return "\n".join(p for p in parts if p)


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _fields(values: dict[str, Any]) -> str:
    width = max((len(k) for k in values), default=0)
    return "\n".join(f"{k.ljust(width)}  {_text(v)}" for k, v in values.items())


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    headers = list(rows[0])
    cells = [[_text(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for c in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return "\n".join(lines)
