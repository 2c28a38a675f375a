"""The /admin API over HTTP: each endpoint's happy path and each bad input, on real Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.accounts.apikeys import hash_key
from gateway.credits import keys
from gateway.credits.outboxes import event_fields
from gateway.services import Services, open_services
from gateway.settings import Settings, Tier
from store import repository
from store.database import session
from sync.worker import SyncWorker
from tests.support.admin import ADMIN_TOKEN, admin_app, assert_error

JSON = dict[str, Any]


async def create(admin: httpx.AsyncClient, **body: Any) -> JSON:
    response = await admin.post("/admin/accounts", json=body)
    assert response.status_code == 201, response.text
    created: JSON = response.json()
    return created


async def outbox_notes(services: Services, account_id: str) -> list[tuple[str, str]]:
    stream = keys.account_keys(account_id).outbox
    entries = await services.redis.xrange(stream)
    events = [event_fields(f) for _, f in entries]
    return [(f["kind"], f["note"]) for f in events if f["acct"] == account_id]


# -- the guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/accounts", "/admin/accounts/a1", "/admin/nowhere"])
async def test_no_admin_token_configured_disables_every_admin_path(
    services: Services, path: str
) -> None:
    services.settings = dataclasses.replace(services.settings, admin_token=None)
    transport = httpx.ASGITransport(app=admin_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(path, headers={"Authorization": "Bearer anything"})
    assert_error(response, 503, "admin_disabled", "CREDITGATE_ADMIN_TOKEN")


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x", "Bearer "],
)
async def test_a_missing_or_wrong_token_is_refused(
    admin: httpx.AsyncClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    admin.headers.pop("Authorization")
    response = await admin.post("/admin/accounts", json={}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_unknown_paths_and_methods_answer_json(admin: httpx.AsyncClient) -> None:
    assert_error(await admin.get("/admin/nowhere"), 404, "not_found")
    assert_error(await admin.get("/admin/accounts/a1/nothing"), 404, "not_found")
    response = await admin.put("/admin/accounts")
    assert_error(response, 405, "method_not_allowed", "GET", "POST")
    assert_error(await admin.get("/admin/accounts/a1/grant"), 405, "method_not_allowed")


# -- create ------------------------------------------------------------------------------------


async def test_create_gives_the_tier_credits_and_a_working_key(
    admin: httpx.AsyncClient, services: Services
) -> None:
    created = await create(admin)
    account = created["account"]
    assert account["id"].startswith("acct_")
    assert account["credits"] == 5 and account["creditsRemaining"] == 5
    assert account["subscriptionTier"] == "free" and account["isSubscribed"] is False
    assert account["subscriptionEndsAt"] is None
    assert created["apiKey"].startswith("cg_") and len(created["apiKey"]) >= 35
    (key,) = account["keys"]
    assert key["id"] == created["keyId"] and key["revokedAt"] is None
    assert created["apiKey"] not in str(account) and "hash" not in str(key).lower()
    with session(services.db) as s:
        found = repository.find_api_key(s, key_hash=hash_key(created["apiKey"]))
    assert found is not None and found.account_id == account["id"]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_create_with_id_email_and_paid_tier(
    admin: httpx.AsyncClient, services: Services, store_kind: str
) -> None:
    created = await create(admin, id="team-7.a_b", email="ops@example.com", tier="pro", months=3)
    account = created["account"]
    assert account["id"] == "team-7.a_b" and account["email"] == "ops@example.com"
    assert account["credits"] == 100 and account["isSubscribed"] is True
    assert account["subscriptionEndsAt"] is not None and account["createdAt"] is not None
    assert await outbox_notes(services, "team-7.a_b") == [("open", "admin: account created")]
    again = await admin.post("/admin/accounts", json={"id": "team-7.a_b"})
    assert_error(again, 409, "conflict", "team-7.a_b")


async def test_create_takes_a_tier_of_the_file(
    real_redis: object, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(tiers={"team": Tier(credits=42, requests_per_minute=5)})
    services = open_services(settings)
    try:
        transport = httpx.ASGITransport(app=admin_app(services))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as client:
            created = await create(client, tier="team", months=2)
            upgraded = await client.post(
                f"/admin/accounts/{created['account']['id']}/upgrade",
                json={"tier": "pro", "months": 1},
            )
    finally:
        await services.close()
    assert created["account"]["credits"] == 42
    assert created["account"]["requestsPerMinute"] == 5
    assert upgraded.json()["account"]["credits"] == 100


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object"]),
        (b'"free"', ["JSON object"]),
        (b'{"id": "a", "plan": "x"}', ["unknown field", "'plan'"]),
        (b'{"tier": "gold"}', ["tier", "unknown tier"]),
        (b'{"tier": true}', ["tier", "string"]),
        (b'{"id": "a|b"}', ["'id'", "letters"]),
        (b'{"id": "{a}"}', ["'id'"]),
        (b'{"id": "-a"}', ["'id'"]),
        (b'{"id": ""}', ["'id'"]),
        (b'{"id": 7}', ["'id'", "string"]),
        (b'{"id": "' + b"a" * 65 + b'"}', ["'id'", "too long"]),
        (b'{"email": "not-an-email"}', ["'email'", "email"]),
        (b'{"email": "a@b"}', ["'email'"]),
        (b'{"tier": "pro", "months": 0}', ["'months'", "between 1 and 36"]),
        (b'{"tier": "pro", "months": 37}', ["'months'"]),
        (b'{"tier": "pro", "months": "3"}', ["'months'", "integer"]),
        (b'{"tier": "pro", "months": true}', ["'months'", "integer"]),
        (b'{"months": 3}', ["'months'", "paid tier"]),
        (b'{"reason": ""}', ["'reason'", "empty"]),
    ],
)
async def test_create_rejects_bad_bodies(
    admin: httpx.AsyncClient, raw: bytes, words: list[str]
) -> None:
    response = await admin.post(
        "/admin/accounts", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request", *words)


# -- show and list -----------------------------------------------------------------------------


async def test_show_reports_usage_and_keys_without_secrets(admin: httpx.AsyncClient) -> None:
    created = await create(admin, id="show-me", email="a@example.org")
    await admin.post("/admin/accounts/show-me/keys", json={"name": "ci"})
    response = await admin.get("/admin/accounts/show-me")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    account = body["account"]
    for field in (
        "credits",
        "bonusCredits",
        "creditsRemaining",
        "totalTokensUsed",
        "monthlyTokensUsed",
        "monthlyResetDate",
        "isSubscribed",
        "subscriptionTier",
        "subscriptionEndsAt",
    ):
        assert field in account
    assert account["email"] == "a@example.org"
    assert sorted(k["name"] for k in account["keys"]) == ["ci", "default"]
    assert {
        "id",
        "prefix",
        "name",
        "createdAt",
        "revokedAt",
        "lastUsedAt",
        "expiresAt",
        "creditLimit",
        "requestsPerMinute",
        "routes",
    } == set(account["keys"][0])
    assert created["apiKey"] not in response.text


async def test_show_restores_an_account_redis_lost(
    admin: httpx.AsyncClient, services: Services
) -> None:
    await create(admin, id="lost")
    await services.redis.delete(keys.account_keys("lost").state)
    response = await admin.get("/admin/accounts/lost")
    assert response.status_code == 200
    assert response.json()["account"]["credits"] == 5


async def test_show_unknown_and_odd_ids(admin: httpx.AsyncClient) -> None:
    assert_error(await admin.get("/admin/accounts/nobody"), 404, "not_found", "nobody")
    assert_error(await admin.get("/admin/accounts/a%7Cb"), 400, "invalid_request", "'id'")
    too_long = "a" * 65
    assert_error(await admin.get(f"/admin/accounts/{too_long}"), 400, "invalid_request")


async def test_list_pages_by_id(admin: httpx.AsyncClient) -> None:
    for name in ("c", "a", "b"):
        await create(admin, id=name)
    first = (await admin.get("/admin/accounts", params={"limit": 2})).json()
    assert [a["id"] for a in first["accounts"]] == ["a", "b"] and first["next"] == "b"
    rest = (await admin.get("/admin/accounts", params={"limit": 2, "after": "b"})).json()
    assert [a["id"] for a in rest["accounts"]] == ["c"] and rest["next"] is None
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"limit": "³"}, {"page": "2"}):
        assert_error(await admin.get("/admin/accounts", params=bad), 400, "invalid_request")


# -- grant -------------------------------------------------------------------------------------


async def test_grant_adds_bonus_credits_with_the_reason(
    admin: httpx.AsyncClient, services: Services
) -> None:
    await create(admin, id="g1")
    response = await admin.post(
        "/admin/accounts/g1/grant", json={"credits": 25, "reason": "support ticket 12"}
    )
    assert response.status_code == 200, response.text
    account = response.json()["account"]
    assert (account["credits"], account["bonusCredits"], account["creditsRemaining"]) == (5, 25, 30)
    assert ("grant", "admin: support ticket 12") in await outbox_notes(services, "g1")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"credits": 0, "reason": "x"}, ["'credits'", "between 1 and 1000000"]),
        ({"credits": -5, "reason": "x"}, ["'credits'"]),
        ({"credits": 1_000_001, "reason": "x"}, ["'credits'"]),
        ({"credits": "5", "reason": "x"}, ["'credits'", "integer"]),
        ({"credits": True, "reason": "x"}, ["'credits'", "integer"]),
        ({"credits": 1.5, "reason": "x"}, ["'credits'", "integer"]),
        ({"credits": 5}, ["'reason'", "required"]),
        ({"credits": 5, "reason": "   "}, ["'reason'", "empty"]),
        ({"credits": 5, "reason": "r" * 501}, ["'reason'", "too long"]),
        ({"credits": 5, "reason": 5}, ["'reason'", "string"]),
        ({"reason": "x"}, ["'credits'", "required"]),
        ({"credits": 5, "reason": "x", "bonus": 1}, ["unknown field", "'bonus'"]),
    ],
)
async def test_grant_rejects_bad_bodies(
    admin: httpx.AsyncClient, body: JSON, words: list[str]
) -> None:
    await create(admin, id="g2")
    response = await admin.post("/admin/accounts/g2/grant", json=body)
    assert_error(response, 400, "invalid_request", *words)


async def test_grant_to_an_unknown_account_is_not_found(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/admin/accounts/ghost/grant", json={"credits": 1, "reason": "x"})
    assert_error(response, 404, "not_found", "ghost")


# -- upgrade, renew, downgrade -----------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_upgrade_renew_downgrade_keep_bonus_credits(
    admin: httpx.AsyncClient, services: Services, store_kind: str
) -> None:
    await create(admin, id="sub")
    await admin.post("/admin/accounts/sub/grant", json={"credits": 7, "reason": "promo"})

    up = await admin.post(
        "/admin/accounts/sub/upgrade", json={"tier": "pro", "months": 1, "reason": "paid"}
    )
    assert up.status_code == 200, up.text
    account = up.json()["account"]
    assert (account["subscriptionTier"], account["credits"], account["bonusCredits"]) == (
        "pro",
        100,
        7,
    )
    first_end = account["subscriptionEndsAt"]

    renewed = await admin.post("/admin/accounts/sub/renew", json={"months": 2})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["account"]["subscriptionEndsAt"] > first_end

    down = await admin.post("/admin/accounts/sub/downgrade", json={"reason": "chargeback"})
    assert down.status_code == 200, down.text
    account = down.json()["account"]
    assert (account["subscriptionTier"], account["isSubscribed"]) == ("free", False)
    assert (account["credits"], account["bonusCredits"]) == (5, 7)
    assert account["subscriptionEndsAt"] is None

    notes = await outbox_notes(services, "sub")
    assert ("upgrade", "admin: paid") in notes
    assert ("renew", "admin") in notes
    assert ("downgrade", "admin: chargeback") in notes


async def test_renew_without_a_subscription_is_a_conflict(admin: httpx.AsyncClient) -> None:
    await create(admin, id="free1")
    response = await admin.post("/admin/accounts/free1/renew", json={"months": 1})
    assert_error(response, 409, "conflict", "no subscription")


async def test_downgrade_with_an_empty_body(admin: httpx.AsyncClient) -> None:
    await create(admin, id="d1", tier="enterprise")
    response = await admin.post("/admin/accounts/d1/downgrade")
    assert response.status_code == 200
    assert response.json()["account"]["credits"] == 5


@pytest.mark.parametrize(
    ("action", "body", "words"),
    [
        ("upgrade", {"tier": "free", "months": 1}, ["'tier'", "downgrade"]),
        ("upgrade", {"tier": "platinum", "months": 1}, ["'tier'", "unknown tier"]),
        ("upgrade", {"tier": "pro", "months": 0}, ["'months'"]),
        ("upgrade", {"tier": "pro", "months": 37}, ["'months'"]),
        ("upgrade", {"tier": "pro", "months": 2.0}, ["'months'", "integer"]),
        ("upgrade", {"tier": "pro"}, ["'months'", "required"]),
        ("upgrade", {"months": 1}, ["'tier'", "required"]),
        ("upgrade", {"tier": "pro", "months": 1, "reason": ""}, ["'reason'"]),
        ("upgrade", {"tier": "pro", "months": 1, "until": "x"}, ["'until'"]),
        ("renew", {"months": -1}, ["'months'"]),
        ("renew", {"months": False}, ["'months'", "integer"]),
        ("renew", {}, ["'months'", "required"]),
        ("renew", {"months": 1, "tier": "pro"}, ["'tier'"]),
        ("downgrade", {"tier": "free"}, ["'tier'"]),
        ("downgrade", {"reason": "x" * 501}, ["'reason'", "too long"]),
    ],
)
async def test_tier_changes_reject_bad_bodies(
    admin: httpx.AsyncClient, action: str, body: JSON, words: list[str]
) -> None:
    await create(admin, id="t1", tier="pro", months=1)
    response = await admin.post(f"/admin/accounts/t1/{action}", json=body)
    assert_error(response, 400, "invalid_request", *words)


@pytest.mark.parametrize(
    ("action", "body"),
    [("upgrade", {"tier": "pro", "months": 1}), ("renew", {"months": 1}), ("downgrade", {})],
)
async def test_tier_changes_of_unknown_accounts_are_not_found(
    admin: httpx.AsyncClient, action: str, body: JSON
) -> None:
    response = await admin.post(f"/admin/accounts/ghost/{action}", json=body)
    assert_error(response, 404, "not_found")


async def test_a_change_restores_an_account_redis_lost(
    admin: httpx.AsyncClient, services: Services
) -> None:
    await create(admin, id="gone", tier="pro")
    await services.redis.delete(keys.account_keys("gone").state)
    response = await admin.post("/admin/accounts/gone/grant", json={"credits": 3, "reason": "r"})
    assert response.status_code == 200
    assert response.json()["account"]["creditsRemaining"] == 103


# -- keys --------------------------------------------------------------------------------------


async def test_keys_create_list_revoke(admin: httpx.AsyncClient, services: Services) -> None:
    await create(admin, id="k1")
    made = await admin.post("/admin/accounts/k1/keys", json={"name": "deploy"})
    assert made.status_code == 201
    body = made.json()
    assert body["apiKey"].startswith("cg_") and body["keyId"].startswith("key_")

    listed = (await admin.get("/admin/accounts/k1/keys")).json()["keys"]
    assert {k["id"] for k in listed} >= {body["keyId"]} and len(listed) == 2

    version_before = int(await services.redis.get(keys.KEYS_VERSION) or 0)
    revoked = await admin.delete(f"/admin/accounts/k1/keys/{body['keyId']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["key"]["revokedAt"] is not None
    assert int(await services.redis.get(keys.KEYS_VERSION)) == version_before + 1
    with session(services.db) as s:
        found = repository.find_api_key(s, key_hash=hash_key(body["apiKey"]))
    assert found is not None and found.revoked

    again = await admin.delete(f"/admin/accounts/k1/keys/{body['keyId']}")
    assert again.status_code == 200
    assert again.json()["key"]["revokedAt"] == revoked.json()["key"]["revokedAt"]


async def test_key_errors(admin: httpx.AsyncClient) -> None:
    other = await create(admin, id="k2")
    await create(admin, id="k3")
    assert_error(await admin.post("/admin/accounts/ghost/keys"), 404, "not_found")
    assert_error(await admin.get("/admin/accounts/ghost/keys"), 404, "not_found")
    assert_error(await admin.delete("/admin/accounts/k3/keys/key_nope"), 404, "not_found")
    # A key of another account is not found under this one.
    mismatch = await admin.delete(f"/admin/accounts/k3/keys/{other['keyId']}")
    assert_error(mismatch, 404, "not_found")
    bad = await admin.post("/admin/accounts/k3/keys", json={"name": 5})
    assert_error(bad, 400, "invalid_request", "'name'")
    assert_error(
        await admin.post("/admin/accounts/k3/keys", json={"scope": "all"}), 400, "invalid_request"
    )
    assert_error(await admin.delete("/admin/accounts/k3/keys/a.b"), 400, "invalid_request")


# -- ledger ------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_ledger_pages_newest_first_from_the_store(
    admin: httpx.AsyncClient, services: Services, store_kind: str
) -> None:
    await create(admin, id="led")
    for n in (1, 2, 3):
        await admin.post("/admin/accounts/led/grant", json={"credits": n, "reason": f"r{n}"})
    assert (await admin.get("/admin/accounts/led/ledger")).json()["entries"] == []
    await SyncWorker(services).sync()

    first = (await admin.get("/admin/accounts/led/ledger", params={"limit": 3})).json()
    assert first["success"] is True
    assert [e["kind"] for e in first["entries"]] == ["grant", "grant", "grant"]
    assert [e["bonusCredits"] for e in first["entries"]] == [3, 2, 1]
    assert first["entries"][0]["reason"] == "admin: r3"
    assert first["next"] == first["entries"][-1]["id"]

    rest = await admin.get("/admin/accounts/led/ledger", params={"before": first["next"]})
    assert [(e["kind"], e["credits"]) for e in rest.json()["entries"]] == [("open", 5)]
    assert rest.json()["next"] is None
    # An operator's change carries a request id into the ledger, like a proxied call.
    ids = [e["requestId"] for e in first["entries"] + rest.json()["entries"]]
    assert all(i.startswith("op_") for i in ids) and len(set(ids)) == 4


async def test_ledger_errors(admin: httpx.AsyncClient) -> None:
    await create(admin, id="led2")
    url = "/admin/accounts/led2/ledger"
    assert_error(await admin.get("/admin/accounts/ghost/ledger"), 404, "not_found")
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "-1"}, {"after": "x"}):
        assert_error(await admin.get(url, params=bad), 400, "invalid_request")
    for cursor in ("0-0", "\x00", "1-2-3; drop", "ab-1-0"):
        response = await admin.get(url, params={"before": cursor})
        assert_error(response, 400, "invalid_request", "'before'")
    # Well formed, but not an entry of this account.
    response = await admin.get(url, params={"before": "3-1700000000000-0"})
    assert_error(response, 400, "invalid_request", "'before'")
