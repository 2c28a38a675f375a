"""A key's own limits through /admin: create with limits, list, change, clear, revoke, every
bad field a 400 naming it; and a changed limit reaching another replica's key cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.accounts.keycache import KeyCache, store_lookup
from gateway.credits import keys
from gateway.credits.scopes import KeyRules
from gateway.services import Services
from store.timefmt import to_ms
from tests.support.admin import assert_error

JSON = dict[str, Any]
LATER = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
LIMITS: JSON = {
    "name": "ci",
    "expiresAt": LATER.isoformat().replace("+00:00", "Z"),
    "creditLimit": 40,
    "requestsPerMinute": 10,
    "routes": ["/api/projects/", "/api/review/x"],
}


async def account(admin: httpx.AsyncClient, account_id: str = "acme") -> JSON:
    response = await admin.post("/admin/accounts", json={"id": account_id})
    assert response.status_code == 201, response.text
    created: JSON = response.json()
    return created


async def new_key(admin: httpx.AsyncClient, account_id: str = "acme", **body: Any) -> JSON:
    response = await admin.post(f"/admin/accounts/{account_id}/keys", json=body)
    assert response.status_code == 201, response.text
    made: JSON = response.json()
    return made


def view_of(keys_seen: list[JSON], key_id: str) -> JSON:
    (found,) = [k for k in keys_seen if k["id"] == key_id]
    return found


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
async def test_create_list_change_clear_revoke(admin: httpx.AsyncClient, store_kind: str) -> None:
    await account(admin)
    made = await new_key(admin, **LIMITS)
    assert made["apiKey"].startswith("cg_") and made["keyId"].startswith("key_")
    expected = {
        "id": made["keyId"],
        "name": "ci",
        "expiresAt": LATER.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "creditLimit": 40,
        "requestsPerMinute": 10,
        "routes": ["/api/projects", "/api/review/x"],
        "revokedAt": None,
        "creditsSpent": 0,
    }
    assert made["key"].items() >= expected.items()

    listed = (await admin.get("/admin/accounts/acme/keys")).json()["keys"]
    assert view_of(listed, made["keyId"]) == made["key"]
    shown = (await admin.get("/admin/accounts/acme")).json()["account"]["keys"]
    assert view_of(shown, made["keyId"]) == made["key"]
    assert made["apiKey"] not in str(listed) + str(shown)
    default = [k for k in shown if k["id"] != made["keyId"]][0]
    assert (default["creditLimit"], default["routes"], default["expiresAt"]) == (None, None, None)
    assert "creditsSpent" not in default

    path = f"/admin/accounts/acme/keys/{made['keyId']}"
    changed = await admin.patch(path, json={"creditLimit": 7, "name": "ci-2"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["key"].items() >= {**expected, "creditLimit": 7, "name": "ci-2"}.items()

    cleared = await admin.patch(path, json={"creditLimit": None, "routes": None, "expiresAt": None})
    after = cleared.json()["key"]
    assert (after["creditLimit"], after["routes"], after["expiresAt"]) == (None, None, None)
    assert "creditsSpent" not in after
    assert (after["requestsPerMinute"], after["name"]) == (10, "ci-2")

    revoked = await admin.delete(path)
    assert revoked.json()["key"]["revokedAt"] is not None
    refused = await admin.patch(path, json={"requestsPerMinute": 5})
    assert_error(refused, 409, "conflict", "revoked")


async def test_another_accounts_key_is_not_found(admin: httpx.AsyncClient) -> None:
    await account(admin, "acme")
    other = await account(admin, "other")
    response = await admin.patch(
        f"/admin/accounts/acme/keys/{other['keyId']}", json={"creditLimit": 1}
    )
    assert_error(response, 404, "not_found", other["keyId"])
    ghost = await admin.patch("/admin/accounts/ghost/keys/key_1", json={"creditLimit": 1})
    assert_error(ghost, 404, "not_found")
    assert_error(await admin.post("/admin/accounts/ghost/keys", json={}), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "x" * 101}, "'name' is too long"),
        ({"expiresAt": "2030-01-01T00:00:00"}, "'expiresAt' needs a time zone"),
        ({"expiresAt": "2020-01-01T00:00:00Z"}, "'expiresAt' must be in the future"),
        ({"creditLimit": -1}, "'creditLimit' must be between 0 and"),
        ({"creditLimit": True}, "'creditLimit' must be an integer"),
        ({"requestsPerMinute": 0}, "'requestsPerMinute' must be between 1 and"),
        ({"routes": []}, "'routes' must be a list"),
        ({"routes": ["/api/../admin"]}, "'routes[0]' must not hold"),
        ({"routes": ["/api/projects/?a=1"]}, "'routes[0]' must be a path"),
        ({"routes": ["/nowhere"]}, "the routes are /api/projects/, /api/review/"),
        ({"credits": 5}, "unknown field(s) 'credits'"),
    ],
)
async def test_each_bad_field_is_a_400_naming_it(
    admin: httpx.AsyncClient, body: JSON, words: str
) -> None:
    created = await account(admin)
    response = await admin.post("/admin/accounts/acme/keys", json=body)
    assert_error(response, 400, "invalid_request", words)
    patched = await admin.patch(f"/admin/accounts/acme/keys/{created['keyId']}", json=body)
    assert_error(patched, 400, "invalid_request", words)
    listed = (await admin.get("/admin/accounts/acme/keys")).json()["keys"]
    assert len(listed) == 1 and listed[0]["creditLimit"] is None


async def test_an_empty_change_is_refused(admin: httpx.AsyncClient) -> None:
    created = await account(admin)
    response = await admin.patch(f"/admin/accounts/acme/keys/{created['keyId']}", json={})
    assert_error(response, 400, "invalid_request", "nothing to change")


async def test_a_change_retried_with_its_idempotency_key_is_replayed(
    admin: httpx.AsyncClient,
) -> None:
    created = await account(admin)
    path = f"/admin/accounts/acme/keys/{created['keyId']}"
    headers = {"Idempotency-Key": "limit-1"}
    first = await admin.patch(path, json={"creditLimit": 3}, headers=headers)
    await admin.patch(path, json={"creditLimit": 9})
    again = await admin.patch(path, json={"creditLimit": 3}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = (await admin.get("/admin/accounts/acme/keys")).json()["keys"]
    assert listed[0]["creditLimit"] == 9
    other = await admin.patch(path, json={"creditLimit": 4}, headers=headers)
    assert_error(other, 422, "idempotency_mismatch")


@pytest.fixture
async def replicas(services: Services) -> AsyncIterator[tuple[KeyCache, KeyCache]]:
    """Two replicas' key caches on one Redis and one store, watching for changes."""
    caches = (
        KeyCache(services.redis, store_lookup(services)),
        KeyCache(services.redis, store_lookup(services)),
    )
    for cache in caches:
        await cache.start()
    yield caches
    for cache in caches:
        await cache.stop()


async def test_a_changed_limit_reaches_every_replica_within_a_second(
    admin: httpx.AsyncClient, services: Services, replicas: tuple[KeyCache, KeyCache]
) -> None:
    await account(admin)
    made = await new_key(admin, creditLimit=40)
    bearer = f"Bearer {made['apiKey']}"
    for cache in replicas:  # both have it cached, with its first limit
        caller = await cache.authenticate(bearer)
        assert caller.rules == KeyRules(made["keyId"], credit_limit=40)
    version = await services.redis.get(keys.KEYS_VERSION)

    path = f"/admin/accounts/acme/keys/{made['keyId']}"
    patched = await admin.patch(path, json={"creditLimit": 5, "expiresAt": LIMITS["expiresAt"]})
    assert patched.status_code == 200, patched.text
    assert await services.redis.get(keys.KEYS_VERSION) != version
    wanted = KeyRules(made["keyId"], credit_limit=5, expires_at_ms=to_ms(LATER))

    async def seen_everywhere() -> None:
        while True:
            rules = [(await cache.authenticate(bearer)).rules for cache in replicas]
            if rules == [wanted, wanted]:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(seen_everywhere(), timeout=1.0)

    cleared = await admin.patch(path, json={"creditLimit": None, "expiresAt": None})
    assert cleared.status_code == 200

    async def cleared_everywhere() -> None:
        while [(await cache.authenticate(bearer)).rules for cache in replicas] != [None, None]:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(cleared_everywhere(), timeout=1.0)
