"""The audit names every disagreement between Redis, the store's snapshot and the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import fields

import pytest
from sqlalchemy import text
from sqlmodel import Session

from gateway.credits import keys
from gateway.credits.results import Snapshot
from gateway.services import Services
from store import repository
from store.database import session
from store.records import AccountSnapshot, LedgerFact
from sync.audit import AuditReport, audit, render
from sync.checks import stream_order
from sync.worker import SyncWorker
from tests.support.redisstate import change_hold, change_state


async def seeded(services: Services) -> None:
    for account in ("aud-1", "aud-2", "aud-3"):
        await services.credits.open(account, tier="pro", months=1)
        await services.credits.grant(account, 3, reason="seed")
    await SyncWorker(services).run_once()


def execute(services: Services, sql: str, **params: object) -> None:
    with session(services.db) as db:
        db.connection().execute(text(sql), params)


def test_redis_and_the_store_name_the_same_account_fields() -> None:
    """The layers may not share one definition: restore, the outbox and the audit carry the
    fields across by name, so both sides' lists must agree, in name, order and type."""
    redis = [(f.name, f.type) for f in fields(Snapshot)]
    assert redis == [(f.name, f.type) for f in fields(AccountSnapshot)]


async def test_clean_after_a_pass(services: Services) -> None:
    await seeded(services)
    report = await audit(services)
    assert report.clean and report.accounts == 3
    assert render(report)[-1] == "audited 3 account(s): clean"


async def test_each_kind_of_difference_is_reported(services: Services) -> None:
    await seeded(services)
    await change_state(services.redis, "aud-1", tier="enterprise")
    await asyncio.to_thread(
        execute, services, "UPDATE accounts SET total_tokens = 9 WHERE id = 'aud-2'"
    )
    await asyncio.to_thread(
        execute,
        services,
        "DELETE FROM ledger_entries WHERE account_id = 'aud-3' AND kind = 'grant'",
    )
    await services.credits.open("aud-4")  # in Redis, never synced

    report = await audit(services)

    found = {(d.account, d.what, d.left, d.right) for d in report.differences}
    assert found == {
        ("aud-1", "tier", "redis", "store"),
        ("aud-2", "total_tokens", "redis", "store"),
        ("aud-3", "bonus_credits", "ledger", "store"),
        ("aud-4", "account", "redis", "store"),
    }
    assert report.unsynced_events == 1
    assert "aud-3: bonus_credits: ledger=0 store=3" in render(report)


async def test_an_account_redis_lost_is_listed_not_a_difference(services: Services) -> None:
    await seeded(services)
    await services.redis.delete(keys.account_keys("aud-2").state)

    report = await audit(services)

    assert report.clean
    assert report.absent_in_redis == ["aud-2"]


# -- the per-account checks ----------------------------------------------------------------------


async def charged(services: Services, account: str, *requests: int) -> None:
    """Open ``account`` and charge one request per number (its tokens), then sync."""
    await services.credits.open(account, tier="pro", months=1)
    for i, tokens in enumerate(requests):
        assert (await services.credits.reserve(account, f"{account}-r{i}", 1)).held
        await services.credits.settle(account, f"{account}-r{i}", tokens)
    await SyncWorker(services).run_once()


def findings(report: AuditReport) -> set[tuple[str, str]]:
    return {(f.account, f.what) for f in report.findings}


async def test_clean_with_holds_open(services: Services) -> None:
    """Held credits are the account's in the store until settled: open holds reconcile."""
    await charged(services, "aud-h", 100)
    assert (await services.credits.reserve("aud-h", "open-1", 3)).held

    report = await audit(services)

    assert report.clean, render(report)


async def test_a_repeated_or_backward_version_is_found(services: Services) -> None:
    await charged(services, "aud-v", 10, 20)
    with session(services.db) as db:
        first, *_ = sorted(
            repository.ledger_facts(db, ["aud-v"])["aud-v"], key=lambda f: stream_order(f.event_id)
        )
    # an event appended after the others, with a version the ledger has: a lost write replayed
    await asyncio.to_thread(
        execute,
        services,
        "INSERT INTO ledger_entries (event_id, account_id, kind, plan_delta, bonus_delta, "
        "credits_delta, tokens, held_plan, held_bonus, occurred_at, version, recorded_at) "
        "SELECT :eid, account_id, 'grant', 0, 0, 0, 0, 0, 0, occurred_at, version, recorded_at "
        "FROM ledger_entries WHERE event_id = :first",
        eid=f"{keys.bucket_of('aud-v')}-9999999999999-0",
        first=first.event_id,
    )

    report = await audit(services)

    assert ("aud-v", "versions") in findings(report)
    assert any("not above" in str(f) for f in report.findings)


async def test_tokens_that_do_not_add_up_are_found(services: Services) -> None:
    await charged(services, "aud-t", 100, 250)
    await asyncio.to_thread(
        execute,
        services,
        "UPDATE ledger_entries SET tokens = 1 WHERE account_id = 'aud-t' AND tokens = 250",
    )

    report = await audit(services)

    # The roll-up, kept with the ledger, no longer is its sums either.
    assert findings(report) == {("aud-t", "tokens"), ("aud-t", "usage roll-up")}
    assert "the ledger's rows add up to 101 tokens, the store's total is 350" in str(
        report.findings[0]
    )


async def test_the_ledger_is_read_a_page_of_accounts_at_a_time(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its rows would not fit in memory at once; each page is checked as the whole was."""
    for account in ("aud-p1", "aud-p2", "aud-p3", "aud-p4", "aud-p5"):
        await charged(services, account, 100)
    await asyncio.to_thread(
        execute, services, "UPDATE ledger_entries SET tokens = 1 WHERE account_id = 'aud-p5'"
    )
    pages: list[list[str]] = []
    read = repository.ledger_facts

    def spied(db: Session, account_ids: Sequence[str]) -> dict[str, list[LedgerFact]]:
        pages.append(list(account_ids))
        return read(db, account_ids)

    monkeypatch.setattr("sync.audit.FACTS_PAGE", 2)
    monkeypatch.setattr(repository, "ledger_facts", spied)

    report = await audit(services)

    assert pages == [["aud-p1", "aud-p2"], ["aud-p3", "aud-p4"], ["aud-p5"]]
    assert findings(report) == {("aud-p5", "tokens"), ("aud-p5", "usage roll-up")}


@pytest.mark.parametrize("store_kind", ["postgresql"])
async def test_a_row_synced_while_the_audit_reads_is_not_half_seen(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's reads are of one moment: a row the sync worker commits between its pages
    is in none of them (read, it would disagree with the snapshot read before it)."""
    for account in ("aud-s1", "aud-s2", "aud-s3"):
        await charged(services, account, 100)
    read = repository.ledger_facts

    def synced_meanwhile(db: Session, account_ids: Sequence[str]) -> dict[str, list[LedgerFact]]:
        if "aud-s1" in account_ids:  # the first page: a later account's event lands now
            execute(
                services,
                "INSERT INTO ledger_entries (event_id, account_id, kind, plan_delta, "
                "bonus_delta, credits_delta, tokens, held_plan, held_bonus, occurred_at, "
                "version, recorded_at) SELECT :eid, account_id, 'charge', 0, 0, 0, 5, 0, 0, "
                "occurred_at, version + 1, recorded_at FROM ledger_entries "
                "WHERE account_id = 'aud-s3' AND kind = 'charge'",
                eid=f"{keys.bucket_of('aud-s3')}-9999999999999-0",
            )
        return read(db, account_ids)

    monkeypatch.setattr("sync.audit.FACTS_PAGE", 2)
    monkeypatch.setattr(repository, "ledger_facts", synced_meanwhile)

    report = await audit(services)

    assert report.clean, render(report)


async def test_a_hold_past_its_deadline_is_found(services: Services) -> None:
    await charged(services, "aud-d")
    assert (await services.credits.reserve("aud-d", "stuck", 2)).held
    now = await services.credits.now_ms()
    await change_hold(services.redis, "aud-d", "stuck", dl=now - 60_000)  # no reaper ran

    report = await audit(services)
    assert findings(report) == {("aud-d", "hold past its deadline")}
    assert "request stuck holds 2 credit(s)" in str(report.findings[0])
    assert (await audit(services, grace_ms=120_000)).clean


async def test_held_credits_the_reservations_do_not_hold_are_found(services: Services) -> None:
    await charged(services, "aud-x")
    assert (await services.credits.reserve("aud-x", "open-1", 2)).held
    await change_state(services.redis, "aud-x", hp=5, plan=95)  # same total

    report = await audit(services)

    assert findings(report) == {("aud-x", "held credits")}


async def test_a_negative_balance_is_found(services: Services) -> None:
    await charged(services, "aud-n", 10)
    await asyncio.to_thread(
        execute, services, "UPDATE ledger_entries SET plan_delta = -200 WHERE kind = 'charge'"
    )
    await change_state(services.redis, "aud-n", bonus=-1)

    report = await audit(services)

    negative = [str(f) for f in report.findings if f.what == "negative balance"]
    assert any("the ledger's sums after" in text for text in negative)
    assert any("Redis: bonus -1" in text for text in negative)


async def test_a_rollup_that_is_not_the_ledgers_sums_is_found(services: Services) -> None:
    await charged(services, "aud-r", 100, 250)
    assert (await audit(services)).clean
    await asyncio.to_thread(
        execute, services, "UPDATE usage_daily SET tokens = tokens + 1, requests = 5"
    )

    report = await audit(services)

    assert findings(report) == {("aud-r", "usage roll-up")}
    (found,) = report.findings
    assert str(found).endswith(
        "route None key None: the ledger sums (requests, charged, refunded, tokens) "
        "(2, 2, 0, 350), the roll-up holds (5, 2, 0, 351)"
    )
