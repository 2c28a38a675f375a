"""The history and ledger endpoints over HTTP, in-process, on SQLite and PostgreSQL: the
account holder's (API key) and the operators' (admin token), JSON and CSV, and the CLI."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.accounts.operations import CreatedAccount, create_account
from gateway.cli import main
from gateway.services import Services
from gateway.settings import Settings
from store.database import session
from store.records import Movement
from store.repository import apply_movements
from store.timefmt import to_ms
from tests.support.admin import ADMIN_TOKEN
from tests.support.samples import make_movement

DAY = datetime(2026, 11, 29, tzinfo=UTC)
RANGE = {"from": "2026-11-29", "to": "2026-12-01"}


@pytest.fixture
def settings(redis_url: str, store_url: str) -> Settings:
    return Settings.load(redis_url=redis_url, database_url=store_url, admin_token=ADMIN_TOKEN)


def move(acct: str, v: int, when: datetime, **fields: object) -> Movement:
    fields.setdefault("tokens", 0)
    return make_movement(acct, v, event_id=f"e-{acct}-{v}", occurred_ms=to_ms(when), **fields)


@pytest.fixture
async def holder(services: Services) -> CreatedAccount:
    """An account with usage on two UTC days and two routes, and a hostile reason."""
    created = await create_account(services, account_id="acme", tier="free")
    other = await create_account(services, account_id="other", tier="free")
    moves = [
        move(
            "acme",
            100,
            DAY + timedelta(hours=1),
            kind="charge",
            plan_delta=-2,
            tokens=3000,
            request_id="r1",
            route="/api/a/",
            key_id=created.key_id,
        ),
        move(
            "acme",
            101,
            DAY + timedelta(hours=23, minutes=59),
            kind="hold",
            plan_delta=-4,
            request_id="r2",
            route="/api/b/",
            key_id=created.key_id,
        ),
        move(
            "acme",
            102,
            DAY + timedelta(days=1, minutes=1),
            kind="refund",
            plan_delta=4,
            request_id="r2",
            route="/api/b/",
            key_id=created.key_id,
            reason='=HYPERLINK("http://evil","x"), "quoted"',
        ),
        move(
            "other",
            100,
            DAY + timedelta(hours=2),
            kind="charge",
            plan_delta=-7,
            request_id="r3",
            tokens=5,
        ),
    ]
    with session(services.db) as db:
        apply_movements(db, movements=moves)
    assert other.account_id == "other"
    return created


def auth(created: CreatedAccount) -> dict[str, str]:
    return {"Authorization": f"Bearer {created.api_key}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_holder_history_by_day_and_route(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    answer = await client.get("/api/user/usage/history", params=RANGE, headers=auth(holder))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["from"], body["to"], body["group"]) == (
        "2026-11-29T00:00:00.000Z",
        "2026-12-01T00:00:00.000Z",
        "day",
    )
    assert body["buckets"] == [
        {
            "day": "2026-11-29",
            "requests": 2,
            "creditsCharged": 6,
            "creditsRefunded": 0,
            "tokens": 3000,
        },
        {
            "day": "2026-11-30",
            "requests": 1,
            "creditsCharged": -4,
            "creditsRefunded": 4,
            "tokens": 0,
        },
    ]
    assert body["totals"]["creditsCharged"] == 2  # what the account paid over the range
    routes = await client.get(
        "/api/user/usage/history", params={**RANGE, "group": "route"}, headers=auth(holder)
    )
    assert {b["route"]: b["creditsCharged"] for b in routes.json()["buckets"]} == {
        "/api/a/": 2,
        "/api/b/": 0,
    }
    keys = await client.get(
        "/api/user/usage/history", params={**RANGE, "group": "key"}, headers=auth(holder)
    )
    assert [b["keyId"] for b in keys.json()["buckets"]] == [holder.key_id]


async def test_history_needs_a_key_and_good_parameters(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    assert (await client.get("/api/user/usage/history")).status_code == 401
    bad = await client.get("/api/user/usage/history", params={"from": "nope"}, headers=auth(holder))
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"
    assert "'from'" in bad.json()["message"]
    wide = await client.get(
        "/api/user/usage/history", params={"group": "account"}, headers=auth(holder)
    )
    assert wide.status_code == 400


async def test_history_and_ledger_as_csv(client: httpx.AsyncClient, holder: CreatedAccount) -> None:
    answer = await client.get(
        "/api/user/usage/history", params={**RANGE, "format": "csv"}, headers=auth(holder)
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines()[0] == "bucket,requests,credits_charged,credits_refunded,tokens"
    ledger = await client.get(
        "/api/user/ledger", params={**RANGE, "format": "csv"}, headers=auth(holder)
    )
    rows = list(csv.DictReader(io.StringIO(ledger.text, newline="")))
    assert [r["event_id"] for r in rows] == ["e-acme-100", "e-acme-101", "e-acme-102"]
    assert rows[2]["reason"] == '\'=HYPERLINK("http://evil","x"), "quoted"'
    assert rows[0]["occurred_at"] == "2026-11-29T01:00:00.000Z"
    assert rows[0]["route"] == "/api/a/"
    assert all(r["account_id"] == "acme" for r in rows)


async def test_operators_see_every_account_and_the_top_spenders(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    refused = await client.get("/admin/usage/history", params=RANGE)
    assert refused.status_code == 401
    every = await client.get(
        "/admin/usage/history", params={**RANGE, "group": "account"}, headers=ADMIN
    )
    assert every.status_code == 200, every.text
    assert {b["accountId"]: b["creditsCharged"] for b in every.json()["buckets"]} == {
        "acme": 2,
        "other": 7,
    }
    one = await client.get(
        "/admin/usage/history", params={**RANGE, "account": "other"}, headers=ADMIN
    )
    assert one.json()["totals"]["creditsCharged"] == 7
    top = await client.get("/admin/usage/top", params={**RANGE, "limit": "1"}, headers=ADMIN)
    assert [b["accountId"] for b in top.json()["buckets"]] == ["other"]
    ledger = await client.get(
        "/admin/usage/ledger", params={**RANGE, "format": "csv"}, headers=ADMIN
    )
    assert len(ledger.text.splitlines()) >= 5  # header + the four movements (+ opens)
    bad = await client.get("/admin/usage/history", params={"account": "../x"}, headers=ADMIN)
    assert bad.status_code == 400


async def test_cli_usage_export(
    holder: CreatedAccount,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CREDITGATE_DATABASE_URL", settings.database_url)
    out = tmp_path / "usage.csv"
    argv = ["usage", "export", "--from", "2026-11-29", "--to", "2026-12-01", "--group", "route"]
    assert main([*argv, "--account", "acme", "-o", str(out)]) == 0
    with out.open(newline="") as written:
        rows = list(csv.DictReader(written))
    assert {r["bucket"]: r["credits_charged"] for r in rows} == {"/api/a/": "2", "/api/b/": "0"}
    assert (
        main(
            [
                "usage",
                "export",
                "--what",
                "ledger",
                "--from",
                "2026-11-29",
                "--to",
                "2026-12-01",
                "--account",
                "other",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("occurred_at,event_id,account_id")
    assert printed[1].split(",")[1] == "e-other-100"
    assert main(["usage", "export", "--from", "tomorrow"]) == 1
    assert "'from' must be an ISO 8601" in capsys.readouterr().err
