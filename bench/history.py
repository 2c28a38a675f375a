"""History benchmark: the usage history's queries on a PostgreSQL ledger of 10 million rows.

Builds ``--rows`` ledger rows (default 10,000,000) over ``--accounts`` accounts and 90 days
in its own database (``cg_bench_history``, or ``CREDITGATE_BENCH_HISTORY_PG_URL``; created if
missing, dropped and migrated to 0004 each run) with one ``INSERT .. SELECT FROM
generate_series`` (no row leaves the server), then migrates to head, which backfills the
daily usage roll-up (timed). Then times each query of ``store.history`` as the endpoints run
it: one account's 30 days by day, route and key; every account's 30 days by day, route, key
and account and the top accounts, each from the ledger alone (before the roll-up) and as the
endpoints now read it (the roll-up, and the ledger for part days at a range's edges), with
the ratio and whether both answered the same. The baseline, measured in the same run, is a
plain ``count(*)`` of the same account's range: each figure is printed with its ratio to it.

Rows: requests of three rows (a hold, a refund, a charge with tokens: an older ledger's
shape, the one that exercises the roll-up's request counting most) of one account each, on
8 routes and 4 keys per account, a tenth with no route or key. Nothing asserts a time. Not
run in CI.
Run: ``python bench/history.py [--rows 10000000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from store import history
from store.database import alembic_config, create_db_engine, normalize_url, upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cg_bench_history"
END = datetime(2026, 12, 1, tzinfo=UTC)
SPAN_DAYS = 90


def fresh_database(url: str) -> None:
    """Drop and create the bench database, then migrate it to 0004 (before the roll-up)."""
    parsed = normalize_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    engine = create_db_engine(url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    engine.dispose()


def backfill(url: str) -> tuple[float, int]:
    """Migrate to head (0005 backfills the roll-up); seconds taken and the roll-up's rows."""
    started = time.perf_counter()
    upgrade(url)
    seconds = time.perf_counter() - started
    engine = create_db_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE usage_daily"))
        rows = connection.execute(text("SELECT count(*) FROM usage_daily")).scalar_one()
    engine.dispose()
    return seconds, int(rows)


LOAD = text(
    """
    INSERT INTO ledger_entries (event_id, account_id, kind, plan_delta, bonus_delta,
        credits_delta, tokens, request_id, reason, occurred_at, version, recorded_at,
        route, key_id)
    SELECT 'b-' || n, 'acct-' || (r % :accounts),
        (ARRAY['hold', 'refund', 'charge'])[n % 3 + 1],
        d, 0, d,
        CASE WHEN n % 3 = 2 THEN (n * 7919) % 60000 ELSE 0 END,
        'req-' || r, NULL,
        :end - make_interval(secs => (r * 3::double precision / :rows) * :span),
        n, now(),
        CASE WHEN r / :accounts % 10 = 0 THEN NULL ELSE '/api/r' || (r / :accounts % 8) || '/' END,
        CASE WHEN r / :accounts % 10 = 0 THEN NULL
            ELSE 'key-' || (r % :accounts) || '-' || (r / :accounts % 4) END
    FROM generate_series(1::bigint, :rows) AS n,
        LATERAL (SELECT n / 3 AS r,
            CASE n % 3 WHEN 0 THEN -2 WHEN 1 THEN 1 ELSE 0 END AS d) AS request
    """
)


def load(url: str, rows: int, accounts: int) -> float:
    engine = create_db_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            LOAD,
            {"rows": rows, "accounts": accounts, "end": END, "span": SPAN_DAYS * 86400.0},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE ledger_entries"))
    engine.dispose()
    return time.perf_counter() - started


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The median of ``repeat`` runs after one warm-up, in milliseconds, and the answer."""
    answer = run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), answer


def every_account_cases(
    db: Session, start: datetime, end: datetime
) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """The operators' queries, each run from the ledger alone (False) or the roll-up (True):
    on whole UTC days, and on a range with part days at both edges (the endpoints' default,
    ``to`` = now)."""
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    ranges = [
        ("", start, end),
        (", part days", start + timedelta(hours=7), end - timedelta(hours=5)),
    ]
    groupings: tuple[history.Grouping, ...] = ("day", "route", "key", "account")
    for label, s, e in ranges:
        for g in groupings:
            ledger, rollup = (
                partial(history.usage_history, db, start=s, end=e, grouping=g, rollup=r)
                for r in (False, True)
            )
            cases.append((f"group={g}{label}", ledger, rollup))
        ledger, rollup = (
            partial(history.top_accounts, db, start=s, end=e, limit=10, rollup=r)
            for r in (False, True)
        )
        cases.append((f"top 10 accounts{label}", ledger, rollup))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("CREDITGATE_BENCH_HISTORY_PG_URL", DEFAULT_URL)
    print(f"database: {make_url(url).render_as_string(hide_password=True)}")
    fresh_database(url)
    seconds = load(url, args.rows, args.accounts)
    print(f"loaded {args.rows:,} rows in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")
    seconds, rollup_rows = backfill(url)
    print(f"migration 0005 backfilled the roll-up ({rollup_rows:,} rows) in {seconds:.1f} s")

    engine = create_db_engine(url)
    start, end = END - timedelta(days=30), END
    account = "acct-7"
    with Session(engine) as db:

        def count() -> int:
            query = text(
                "SELECT count(*) FROM ledger_entries WHERE account_id = :a "
                "AND occurred_at >= :s AND occurred_at < :e"
            )
            return int(db.execute(query, {"a": account, "s": start, "e": end}).scalar_one())

        base_ms, rows_in_range = timed(count, args.repeat)
        print(
            f"baseline count(*) of one account's 30 days ({rows_in_range:,} rows): {base_ms:.1f} ms"
        )
        print(f"{'query (30 days)':<30} {'median ms':>10} {'buckets':>8} {'x baseline':>11}")
        groupings: tuple[history.Grouping, ...] = ("day", "route", "key")
        for g in groupings:
            one = partial(
                history.usage_history, db, start=start, end=end, grouping=g, account_id=account
            )
            ms, answer = timed(one, args.repeat)
            name = f"one account, group={g}"
            print(f"{name:<30} {ms:>10.1f} {len(answer):>8} {ms / base_ms:>11.1f}")
        print()
        print(
            f"{'every account (30 days)':<36} {'ledger ms':>10} {'roll-up ms':>11} "
            f"{'speed-up':>9} {'buckets':>8} {'same':>5}"
        )
        for name, ledger, rollup in every_account_cases(db, start, end):
            before, slow = timed(ledger, args.repeat)
            after, fast = timed(rollup, args.repeat)
            print(
                f"{name:<36} {before:>10.1f} {after:>11.1f} {before / after:>8.0f}x "
                f"{len(fast):>8} {'yes' if fast == slow else 'NO':>5}"
            )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
