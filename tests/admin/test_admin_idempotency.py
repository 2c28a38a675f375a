"""``Idempotency-Key`` on the admin writes: a retried write is applied once, on real Redis.

A client that lost the answer to ``POST .../grant`` and sent it again used to grant twice.
With the header, the retry answers the first outcome and changes nothing, even when two
retries race on two replicas, or when the first answer was lost from Redis too.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.accounts import operations as accounts
from gateway.admin import operations as table
from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services, open_services
from gateway.settings import Settings
from store import repository
from store.database import session
from sync.worker import SyncWorker
from tests.support.admin import admin_client, assert_error

JSON = dict[str, Any]
GRANT = {"credits": 7, "reason": "outage credit"}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def make_account(admin: httpx.AsyncClient, account: str, **body: Any) -> JSON:
    response = await admin.post("/admin/accounts", json={"id": account, **body})
    assert response.status_code == 201, response.text
    created: JSON = response.json()
    return created


async def grants(services: Services, account: str) -> list[dict[str, str]]:
    """The grant movements of the account's outbox: what the ledger will hold."""
    entries = await services.redis.xrange(keys.account_keys(account).outbox)
    events = [dict(event_fields(f)) for _, f in entries]
    return [f for f in events if f["acct"] == account and f["kind"] == "grant"]


async def bonus(admin: httpx.AsyncClient, account: str) -> int:
    shown = await admin.get(f"/admin/accounts/{account}")
    value: int = shown.json()["account"]["bonusCredits"]
    return value


def answer_key(key: str, scope: str = "admin") -> str:
    return keys.admin_answer(scope, hashlib.sha256(key.encode()).hexdigest())


@pytest.fixture
async def replica(
    services: Services, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API of a second replica: its own Services on the same Redis and store."""
    other = open_services(make_settings())
    async with admin_client(other) as client:
        yield client
    await other.close()


# -- a retry is applied once -------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_a_retried_grant_is_applied_once_and_answers_the_first_answer(
    admin: httpx.AsyncClient, services: Services, store_kind: str
) -> None:
    await make_account(admin, "idem-1")
    url = "/admin/accounts/idem-1/grant"
    first = await admin.post(url, json=GRANT, headers=keyed("grant-42"))
    retry = await admin.post(url, json=GRANT, headers=keyed("grant-42"))

    assert (first.status_code, retry.status_code) == (200, 200)
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert await bonus(admin, "idem-1") == 7

    await SyncWorker(services).sync()
    ledger = (await admin.get("/admin/accounts/idem-1/ledger")).json()["entries"]
    granted = [e for e in ledger if e["kind"] == "grant"]
    assert [(e["credits"], e["reason"]) for e in granted] == [(7, "admin: outage credit")]
    assert granted[0]["requestId"].startswith("op_")


async def test_without_the_header_each_grant_is_applied(admin: httpx.AsyncClient) -> None:
    await make_account(admin, "idem-plain")
    for _ in range(2):
        response = await admin.post("/admin/accounts/idem-plain/grant", json=GRANT)
        assert response.status_code == 200 and "idempotent-replayed" not in response.headers
    assert await bonus(admin, "idem-plain") == 14


async def test_concurrent_identical_grants_on_two_replicas_apply_once(
    admin: httpx.AsyncClient, replica: httpx.AsyncClient, services: Services
) -> None:
    await make_account(admin, "idem-race")
    url = "/admin/accounts/idem-race/grant"
    clients = [admin, replica] * 8
    answers = await asyncio.gather(
        *(c.post(url, json=GRANT, headers=keyed("race-1")) for c in clients)
    )

    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 409} and statuses[0] == 200, statuses
    firsts = [a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers]
    assert len(firsts) == 1
    for refused in (a for a in answers if a.status_code == 409):
        assert_error(refused, 409, "conflict", "in flight")
    assert await bonus(admin, "idem-race") == 7
    assert len(await grants(services, "idem-race")) == 1


async def test_a_retry_runs_again_when_the_first_answer_was_lost_and_still_applies_once(
    admin: httpx.AsyncClient, services: Services
) -> None:
    """Past the claim (a replica died, Redis dropped the answer), the operation runs again:
    its request id, derived from the key, is one the engine has applied already."""
    await make_account(admin, "idem-lost")
    url = "/admin/accounts/idem-lost/grant"
    assert (await admin.post(url, json=GRANT, headers=keyed("lost-1"))).status_code == 200
    assert await services.redis.delete(answer_key("lost-1")) == 1

    again = await admin.post(url, json=GRANT, headers=keyed("lost-1"))
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert again.json()["account"]["bonusCredits"] == 7
    assert len(await grants(services, "idem-lost")) == 1


TIER_CHANGES = [
    ("upgrade", {"tier": "enterprise", "months": 1}),
    ("renew", {"months": 2}),
    ("downgrade", {"reason": "chargeback"}),
]


@pytest.mark.parametrize(("action", "body"), TIER_CHANGES)
async def test_a_retried_tier_change_is_applied_once(
    admin: httpx.AsyncClient, services: Services, action: str, body: JSON
) -> None:
    await make_account(admin, "idem-tier", tier="pro", months=1)
    url = f"/admin/accounts/idem-tier/{action}"
    first = await admin.post(url, json=body, headers=keyed(f"{action}-1"))
    await services.redis.delete(answer_key(f"{action}-1"))  # the engine alone must hold
    retry = await admin.post(url, json=body, headers=keyed(f"{action}-1"))
    assert first.status_code == retry.status_code == 200, retry.text
    assert retry.json() == first.json()  # a renew moved the end out once, not twice

    entries = await services.redis.xrange(keys.account_keys("idem-tier").outbox)
    assert [event_fields(f)["kind"] for _, f in entries].count(action) == 1


async def test_a_retried_revoke_is_replayed(admin: httpx.AsyncClient) -> None:
    created = await make_account(admin, "idem-rev")
    url = f"/admin/accounts/idem-rev/keys/{created['keyId']}"
    first = await admin.delete(url, headers=keyed("rev-1"))
    retry = await admin.delete(url, headers=keyed("rev-1"))
    assert first.status_code == retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true" and retry.json() == first.json()


# -- create: the secret is shown once ----------------------------------------------------------


async def test_a_retried_create_replays_the_account_without_the_secret(
    admin: httpx.AsyncClient, services: Services
) -> None:
    body = {"email": "ops@acme.test", "tier": "pro", "months": 1}
    first = await admin.post("/admin/accounts", json=body, headers=keyed("signup-7"))
    retry = await admin.post("/admin/accounts", json=body, headers=keyed("signup-7"))

    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    created, replayed = first.json(), retry.json()
    assert created["apiKey"].startswith("cg_") and "apiKey" not in replayed
    assert replayed == {k: v for k, v in created.items() if k != "apiKey"}
    kept = await services.redis.get(answer_key("signup-7"))
    assert isinstance(kept, str) and created["apiKey"] not in kept
    with session(services.db) as s:
        assert [a.account_id for a in repository.list_accounts(s, limit=10)] == [
            created["account"]["id"]
        ]


async def test_a_create_run_again_refuses_a_second_account(
    admin: httpx.AsyncClient, services: Services
) -> None:
    """Without an ``id``, the new account's id is derived from the key: a create that runs
    again (its first answer lost) meets the first account instead of making another."""
    first = await admin.post("/admin/accounts", json={}, headers=keyed("signup-8"))
    assert first.status_code == 201
    await services.redis.delete(answer_key("signup-8"))
    again = await admin.post("/admin/accounts", json={}, headers=keyed("signup-8"))
    assert_error(again, 409, "conflict", first.json()["account"]["id"], "exists")
    with session(services.db) as s:
        assert len(repository.list_accounts(s, limit=10)) == 1


async def test_a_retried_key_creation_replays_the_key_id_without_the_secret(
    admin: httpx.AsyncClient,
) -> None:
    await make_account(admin, "idem-key")
    url = "/admin/accounts/idem-key/keys"
    first = await admin.post(url, json={"name": "ci"}, headers=keyed("key-1"))
    retry = await admin.post(url, json={"name": "ci"}, headers=keyed("key-1"))
    assert first.status_code == retry.status_code == 201
    assert retry.json() == {k: v for k, v in first.json().items() if k != "apiKey"}
    listed = (await admin.get(url)).json()["keys"]
    assert len(listed) == 2  # the first key and this one, once


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/accounts/idem-mis/grant", {"credits": 8, "reason": "outage credit"}),
        ("POST", "/admin/accounts/idem-other/grant", GRANT),
        ("POST", "/admin/accounts/idem-mis/renew", {"months": 1}),
        ("DELETE", "/admin/accounts/idem-mis/keys/key_0123", None),
    ],
)
async def test_the_same_key_for_another_request_is_422(
    admin: httpx.AsyncClient, method: str, path: str, body: JSON | None
) -> None:
    await make_account(admin, "idem-mis")
    await make_account(admin, "idem-other")
    url = "/admin/accounts/idem-mis/grant"
    assert (await admin.post(url, json=GRANT, headers=keyed("mis-1"))).status_code == 200
    reused = await admin.request(method, path, json=body, headers=keyed("mis-1"))
    assert_error(reused, 422, "idempotency_mismatch", "another request")
    assert await bonus(admin, "idem-mis") == await bonus(admin, "idem-other") + 7


async def test_a_retry_while_the_first_runs_is_409_in_flight(
    admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_account(admin, "idem-slow")
    running, finish = asyncio.Event(), asyncio.Event()
    grant = accounts.grant

    async def slow_grant(*args: Any, **kwargs: Any) -> Any:
        running.set()
        await finish.wait()
        return await grant(*args, **kwargs)

    monkeypatch.setattr(accounts, "grant", slow_grant)
    url = "/admin/accounts/idem-slow/grant"
    first = asyncio.create_task(admin.post(url, json=GRANT, headers=keyed("slow-1")))
    await running.wait()
    try:  # refused at once: a retry that ran too would wait on ``finish`` with the first
        during = await asyncio.wait_for(admin.post(url, json=GRANT, headers=keyed("slow-1")), 5)
        other = await asyncio.wait_for(
            admin.post(url, json={**GRANT, "credits": 1}, headers=keyed("slow-1")), 5
        )
    finally:
        finish.set()

    assert_error(during, 409, "conflict", "still in flight")
    assert_error(other, 422, "idempotency_mismatch")
    assert (await first).status_code == 200
    assert await bonus(admin, "idem-slow") == 7


@pytest.mark.parametrize("key", [b"", b"k" * 256, b"caf\xc3\xa9", b"tab\there"])
async def test_a_malformed_key_is_400_and_changes_nothing(
    admin: httpx.AsyncClient, key: bytes
) -> None:
    await make_account(admin, "idem-bad")
    response = await admin.post(
        "/admin/accounts/idem-bad/grant", json=GRANT, headers={b"Idempotency-Key": key}
    )
    assert_error(response, 400, "invalid_request", "Idempotency-Key", "1 to 255 printable ASCII")
    assert await bonus(admin, "idem-bad") == 0


async def test_a_refusal_is_not_kept_its_retry_runs_again(admin: httpx.AsyncClient) -> None:
    url = "/admin/accounts/idem-later/grant"
    assert_error(await admin.post(url, json=GRANT, headers=keyed("later-1")), 404, "not_found")
    await make_account(admin, "idem-later")
    retry = await admin.post(url, json=GRANT, headers=keyed("later-1"))
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert await bonus(admin, "idem-later") == 7


async def test_reads_ignore_the_header(admin: httpx.AsyncClient) -> None:
    await make_account(admin, "idem-read")
    for _ in range(2):
        shown = await admin.get("/admin/accounts/idem-read", headers=keyed("read-1"))
        assert shown.status_code == 200 and "idempotent-replayed" not in shown.headers


def operation(name: str) -> table.Operation:
    (found,) = [op for op in table.OPERATIONS if op.name == name]
    return found


def call(front: table.FrontEnd, path: JSON, body: JSON, key: str | None) -> table.Call:
    async def read() -> JSON:
        return body

    return table.Call(front, path, {}, read, idempotency_key=key)


async def test_the_cli_and_the_api_keep_keys_apart(services: Services) -> None:
    """The same key from the two front ends names two requests: each has its own."""
    await operation("create_account").perform(
        services, call(table.CLI, {}, {"id": "idem-scope"}, None)
    )
    for front in (table.API, table.CLI):
        asked = call(front, {"account_id": "idem-scope"}, GRANT, "both-1")
        assert not (await operation("grant").perform(services, asked)).replayed
    state = await services.credits.status("idem-scope")
    assert state is not None and state.bonus_credits == 14
