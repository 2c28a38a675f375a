"""History benchmark: the usage history's queries on a PostgreSQL ledger of 10 million rows.

Builds ``--rows`` ledger rows (default 10,000,000) over ``--accounts`` accounts and 90 days
in its own database (``cg_bench_history``, or ``CREDITGATE_BENCH_HISTORY_PG_URL``; created if
missing, dropped and migrated each run) with one ``INSERT .. SELECT FROM generate_series``
(no row leaves the server), then times each query of ``store.history`` as the endpoints run
it: one account's 30 days by day, route and key; every account's 30 days by day and account;
the top accounts. The baseline, measured in the same run, is a plain ``count(*)`` of the same
account's range: each figure is printed with its ratio to it.

Rows: a third are holds, a third refunds, a third charges (with tokens), on 8 routes and 4
keys per account, a tenth with no route or key. Nothing asserts a time. Not run in CI.
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
from pathlib import Path
from typing import Any

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from store import history
from store.database import create_db_engine, normalize_url, upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/cg_bench_history"
END = datetime(2026, 12, 1, tzinfo=UTC)
SPAN_DAYS = 90


def fresh_database(url: str) -> None:
    """Drop and create the bench database, then migrate it."""
    parsed = normalize_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    upgrade(url)


LOAD = text(
    """
    INSERT INTO ledger_entries (event_id, account_id, kind, plan_delta, bonus_delta,
        credits_delta, tokens, request_id, reason, occurred_at, version, recorded_at,
        route, key_id)
    SELECT 'b-' || n, 'acct-' || (n % :accounts),
        (ARRAY['hold', 'refund', 'charge'])[n % 3 + 1],
        d, 0, d,
        CASE WHEN n % 3 = 2 THEN (n * 7919) % 60000 ELSE 0 END,
        'req-' || (n / 3), NULL,
        :end - make_interval(secs => (n::double precision / :rows) * :span),
        n, now(),
        CASE WHEN n / :accounts % 10 = 0 THEN NULL ELSE '/api/r' || (n / :accounts % 8) || '/' END,
        CASE WHEN n / :accounts % 10 = 0 THEN NULL
            ELSE 'key-' || (n % :accounts) || '-' || (n / :accounts % 4) END
    FROM generate_series(1::bigint, :rows) AS n,
        LATERAL (SELECT CASE n % 3 WHEN 0 THEN -2 WHEN 1 THEN 1 ELSE 0 END AS d) AS deltas
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
        cases: list[tuple[str, Callable[[], Any]]] = [
            *(
                (
                    f"one account, group={g}",
                    lambda g=g: history.usage_history(
                        db, start=start, end=end, grouping=g, account_id=account
                    ),
                )
                for g in ("day", "route", "key")
            ),
            *(
                (
                    f"every account, group={g}",
                    lambda g=g: history.usage_history(db, start=start, end=end, grouping=g),
                )
                for g in ("day", "account")
            ),
            ("top 10 accounts", lambda: history.top_accounts(db, start=start, end=end, limit=10)),
        ]
        print(f"{'query (30 days)':<28} {'median ms':>10} {'buckets':>8} {'x baseline':>11}")
        for name, run in cases:
            ms, answer = timed(run, args.repeat)
            print(f"{name:<28} {ms:>10.1f} {len(answer):>8} {ms / base_ms:>11.1f}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
