"""``creditgate usage export``: the usage history or the ledger as CSV, from the store.

Reads the store of record only (no Redis): an operator can export from a replica of the
database. ``--what history`` (default) buckets by ``--group``; ``--what ledger`` writes every
movement of the range, oldest first. ``--account`` narrows to one account. Exit 0 done,
1 bad arguments or store unavailable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TextIO

from sqlalchemy import Engine

from gateway.accounts import csvexport, validation
from gateway.accounts import history as usage
from gateway.errors import InvalidRequest
from gateway.settings import Settings
from store import history
from store.database import create_db_engine, session
from store.errors import StoreError
from store.records import LedgerRecord


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("usage", help="usage history and ledger exports")
    actions = group.add_subparsers(dest="usage_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write the history or the ledger as CSV")
    export.add_argument("--what", choices=("history", "ledger"), default="history")
    export.add_argument("--group", choices=history.GROUPINGS, default="day")
    export.add_argument("--from", dest="start", help="ISO 8601 UTC; default: 30 days before --to")
    export.add_argument("--to", dest="end", help="ISO 8601 UTC, excluded; default: now")
    export.add_argument("--account", help="one account's usage (default: every account)")
    export.add_argument("--output", "-o", help="a file to write (default: standard output)")
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    query = {"group": args.group}
    if args.start is not None:
        query["from"] = args.start
    if args.end is not None:
        query["to"] = args.end
    try:
        wanted = usage.history_query(query, groupings=history.GROUPINGS)
        account = None if args.account is None else validation.account_id(args.account, "account")
    except InvalidRequest as exc:
        print(f"creditgate usage export: {exc}", file=sys.stderr)
        return 1
    engine = create_db_engine(settings.database_url)
    try:
        if args.output is None:
            _write(sys.stdout, engine, wanted, account, args.what)
        else:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                _write(out, engine, wanted, account, args.what)
    except StoreError as exc:
        print(f"creditgate usage export: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _write(
    out: TextIO, engine: Engine, wanted: usage.HistoryQuery, account: str | None, what: str
) -> None:
    if what == "ledger":
        out.write(csvexport.line(usage.LEDGER_COLUMNS))
        for record in _ledger(engine, wanted, account):
            out.write(csvexport.line(usage.ledger_row(record)))
        return
    with session(engine) as db:
        buckets = history.usage_history(
            db, start=wanted.start, end=wanted.end, grouping=wanted.grouping, account_id=account
        )
    if wanted.grouping == "day":
        buckets = history.day_buckets(buckets, wanted.days())
    out.write(csvexport.document(usage.HISTORY_COLUMNS, map(usage.history_row, buckets)))


def _ledger(
    engine: Engine, wanted: usage.HistoryQuery, account: str | None
) -> Iterator[LedgerRecord]:
    after: LedgerRecord | None = None
    while True:
        with session(engine) as db:
            page = history.ledger_range(
                db,
                start=wanted.start,
                end=wanted.end,
                account_id=account,
                after=after,
                limit=usage.EXPORT_PAGE,
            )
        yield from page
        if len(page) < usage.EXPORT_PAGE:
            return
        after = page[-1]
