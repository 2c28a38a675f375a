"""The account holder's own keys, ``/api/user/keys``, over HTTP in-process on SQLite and
PostgreSQL: create (secret once), list, limit, revoke; only the caller's account's keys; a key
with limits of its own may list but not manage keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis

from gateway.accounts.keycache import announce_key_change
from gateway.accounts.operations import CreatedAccount, create_account
from gateway.admin.openapi import admin_paths
from gateway.credits.scopes import KeyRules
from gateway.services import Services
from gateway.settings import Settings
from gateway.web.openapi import openapi_document
from store import repository
from store.database import session
from tests.support.admin import assert_error
from tests.support.documented import CHECKS, operation_of

JSON = dict[str, Any]
LATER = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)


@pytest.fixture
def settings(redis_url: str, store_url: str) -> Settings:
    return Settings.load(redis_url=redis_url, database_url=store_url)


@pytest.fixture
async def holder(services: Services) -> CreatedAccount:
    await create_account(services, account_id="other")
    return await create_account(services, account_id="acme")


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_list_limit_and_revoke_own_keys(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    me = auth(holder.api_key)
    made = await client.post(
        "/api/user/keys",
        json={"name": "laptop", "creditLimit": 3, "routes": ["/api/review/"]},
        headers=me,
    )
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["success"] is True and created["apiKey"].startswith("cg_")
    assert created["key"]["routes"] == ["/api/review"] and created["key"]["creditLimit"] == 3

    listed = await client.get("/api/user/keys", headers=me)
    assert listed.status_code == 200
    keys = {k["id"]: k for k in listed.json()["keys"]}
    assert set(keys) == {holder.key_id, created["keyId"]}
    assert keys[created["keyId"]] == created["key"]
    assert created["apiKey"] not in listed.text

    path = f"/api/user/keys/{created['keyId']}"
    patched = await client.patch(
        path, json={"creditLimit": None, "expiresAt": LATER.isoformat()}, headers=me
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()["key"]
    assert (changed["creditLimit"], changed["routes"]) == (None, ["/api/review"])
    assert changed["expiresAt"] == LATER.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    revoked = await client.delete(path, headers=me)
    assert revoked.status_code == 200 and revoked.json()["key"]["revokedAt"] is not None
    again = await client.patch(path, json={"name": "x"}, headers=me)
    assert_error(again, 409, "conflict", "revoked")
    assert (await client.get("/api/user/usage", headers=auth(created["apiKey"]))).status_code == 401


async def test_a_new_key_works_at_once(client: httpx.AsyncClient, holder: CreatedAccount) -> None:
    made = await client.post("/api/user/keys", headers=auth(holder.api_key))
    assert made.status_code == 201, made.text
    usage = await client.get("/api/user/usage", headers=auth(made.json()["apiKey"]))
    assert usage.status_code == 200 and usage.json()["usage"]["accountId"] == "acme"


async def test_a_key_with_a_credit_limit_shows_what_it_spent_this_period(
    client: httpx.AsyncClient, services: Services, holder: CreatedAccount
) -> None:
    me = auth(holder.api_key)
    made = (await client.post("/api/user/keys", json={"creditLimit": 4}, headers=me)).json()
    assert made["key"]["creditsSpent"] == 0
    rules = KeyRules(made["keyId"], credit_limit=4)
    held = await services.credits.reserve("acme", "r1", 3, key_id=made["keyId"], rules=rules)
    assert held.status == "ok"
    await services.credits.settle("acme", "r1", 0, charge=2)  # 1 of 3 given back
    keys = {k["id"]: k for k in (await client.get("/api/user/keys", headers=me)).json()["keys"]}
    assert keys[made["keyId"]]["creditsSpent"] == 2
    assert "creditsSpent" not in keys[holder.key_id]  # no credit limit: nothing counted
    path = f"/api/user/keys/{made['keyId']}"
    raised = await client.patch(path, json={"creditLimit": 10}, headers=me)
    assert raised.json()["key"]["creditsSpent"] == 2
    cleared = await client.patch(path, json={"creditLimit": None}, headers=me)
    assert "creditsSpent" not in cleared.json()["key"]


async def test_a_key_with_limits_may_list_but_not_manage_keys(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    made = await client.post(
        "/api/user/keys", json={"requestsPerMinute": 5}, headers=auth(holder.api_key)
    )
    limited = auth(made.json()["apiKey"])
    assert (await client.get("/api/user/keys", headers=limited)).status_code == 200
    words = "a key with its own limits cannot manage keys"
    assert_error(await client.post("/api/user/keys", headers=limited), 403, "forbidden", words)
    for key_id in (holder.key_id, made.json()["keyId"]):
        path = f"/api/user/keys/{key_id}"
        patched = await client.patch(path, json={"requestsPerMinute": None}, headers=limited)
        assert_error(patched, 403, "forbidden", words)
        assert_error(await client.delete(path, headers=limited), 403, "forbidden", words)
    listed = (await client.get("/api/user/keys", headers=limited)).json()["keys"]
    assert all(k["revokedAt"] is None for k in listed)
    assert [k["requestsPerMinute"] for k in listed if k["id"] == made.json()["keyId"]] == [5]


async def test_another_accounts_key_is_not_found(
    client: httpx.AsyncClient, services: Services, holder: CreatedAccount
) -> None:
    with session(services.db) as s:
        (theirs,) = repository.list_api_keys(s, account_id="other")
    path = f"/api/user/keys/{theirs.key_id}"
    me = auth(holder.api_key)
    assert_error(await client.patch(path, json={"name": "x"}, headers=me), 404, "not_found")
    assert_error(await client.delete(path, headers=me), 404, "not_found")
    with session(services.db) as s:
        (still,) = repository.list_api_keys(s, account_id="other")
    assert still == theirs


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"creditLimit": True}, "'creditLimit' must be an integer"),
        ({"requestsPerMinute": 2_000_000}, "'requestsPerMinute' must be between"),
        ({"expiresAt": "2030-01-01"}, "'expiresAt' needs a time zone"),
        ({"routes": ["/admin/"]}, "'routes[0]': '/admin' is not under any proxied route"),
        ({"routes": ["/api//x"]}, "'routes[0]' must not hold"),
        ({"name": "x" * 101}, "'name' is too long"),
        ({"secret": "cg_x"}, "unknown field(s) 'secret'"),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_each_bad_field_is_a_400_naming_it(
    client: httpx.AsyncClient, holder: CreatedAccount, body: object, words: str
) -> None:
    me = auth(holder.api_key)
    assert_error(
        await client.post("/api/user/keys", json=body, headers=me), 400, "invalid_request", words
    )
    path = f"/api/user/keys/{holder.key_id}"
    assert_error(await client.patch(path, json=body, headers=me), 400, "invalid_request", words)
    listed = (await client.get("/api/user/keys", headers=me)).json()["keys"]
    assert [k["id"] for k in listed] == [holder.key_id]


async def test_bodies_are_bounded_and_keys_authenticated(
    client: httpx.AsyncClient, holder: CreatedAccount
) -> None:
    huge = b'{"name": "' + b"x" * 70_000 + b'"}'
    response = await client.post(
        "/api/user/keys",
        content=huge,
        headers={**auth(holder.api_key), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
    assert_error(await client.get("/api/user/keys"), 401, "unauthorized")
    assert_error(await client.post("/api/user/keys", json={}), 401, "unauthorized")
    bad_id = await client.delete("/api/user/keys/a|b", headers=auth(holder.api_key))
    assert_error(bad_id, 400, "invalid_request", "keyId")


async def test_an_expired_key_is_refused_as_expired(
    client: httpx.AsyncClient, services: Services, holder: CreatedAccount
) -> None:
    made = await client.post(
        "/api/user/keys", json={"expiresAt": LATER.isoformat()}, headers=auth(holder.api_key)
    )
    expiring = auth(made.json()["apiKey"])
    assert (await client.get("/api/user/keys", headers=expiring)).status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    with session(services.db) as s:  # as if a week went by
        changed = repository.update_api_key(
            s, account_id="acme", key_id=made.json()["keyId"], changes={"expires_at": past}
        )
    assert changed is not None
    await announce_key_change(services.redis, changed.key_hash)

    async def refused() -> httpx.Response:
        while True:
            response = await client.get("/api/user/keys", headers=expiring)
            if response.status_code != 200:
                return response
            await asyncio.sleep(0.02)

    response = await asyncio.wait_for(refused(), timeout=1.0)
    assert_error(response, 401, "key_expired", made.json()["keyId"], "expired at")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_every_answer_is_documented(
    client: httpx.AsyncClient, services: Services, holder: CreatedAccount
) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document(services.settings, admin_paths()))
    me = auth(holder.api_key)
    made = await client.post("/api/user/keys", json={"creditLimit": 2}, headers=me)
    limited = auth(made.json()["apiKey"])
    key = f"/api/user/keys/{made.json()['keyId']}"
    huge = {"name": "x" * 70_000}
    cases: list[tuple[str, str, object, dict[str, str], int]] = [
        ("GET", "/api/user/keys", None, me, 200),
        ("GET", "/api/user/keys", None, {}, 401),
        ("POST", "/api/user/keys", {"name": "n", "routes": ["/api/review/"]}, me, 201),
        ("POST", "/api/user/keys", {"creditLimit": -1}, me, 400),
        ("POST", "/api/user/keys", huge, me, 413),
        ("POST", "/api/user/keys", {}, limited, 403),
        ("PATCH", key, {"requestsPerMinute": 9}, me, 200),
        ("PATCH", key, {}, me, 400),
        ("PATCH", key, {"name": "n"}, limited, 403),
        ("PATCH", "/api/user/keys/key_nope", {"name": "n"}, me, 404),
        ("DELETE", "/api/user/keys/key_nope", None, me, 404),
        ("DELETE", key, None, me, 200),
        ("PATCH", key, {"name": "n"}, me, 409),
    ]
    for method, path, body, headers, status in cases:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        op, params = operation_of(schema, method, path)
        assert str(status) in op.definition.raw["responses"], (method, path, status)
        op.Case(path_parameters=params).validate_response(response, checks=CHECKS)
