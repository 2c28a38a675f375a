"""The dashboard and the console over HTTP, in-process: sessions (cookie flags, expiry, CSRF,
a revoked key's session ends, one-time sign-in links), the pages' security headers and what
they show, and the console's idempotent actions."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from gateway.accounts.keyfields import KeyLimits
from gateway.accounts.operations import (
    CreatedAccount,
    create_account,
    create_key,
    list_keys,
    revoke_key,
)
from gateway.app import create_app
from gateway.credits import keys
from gateway.credits.scopes import KeyRules
from gateway.services import Services
from gateway.settings import Settings
from gateway.ui.sessions import SignIns, digest
from sync.worker import SyncWorker
from tests.support.admin import ADMIN_TOKEN


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def settings(redis_url: str, store_url: str) -> Settings:
    return Settings.load(
        redis_url=redis_url, database_url=store_url, admin_token=ADMIN_TOKEN, ui_session_ttl=120
    )


@pytest.fixture
async def app(settings: Settings, services: Services) -> AsyncIterator[Starlette]:
    built: Starlette = create_app(settings, services=services)
    async with built.router.lifespan_context(built):
        yield built


@pytest.fixture
def visitor(app: Starlette) -> Callable[..., httpx.AsyncClient]:
    def make(base: str = "http://gw") -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)

    return make


@pytest.fixture
async def holder(services: Services) -> CreatedAccount:
    return await create_account(services, account_id="acme", tier="free")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the page has a CSRF field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post("/dashboard/signin", data={"secret": secret})


def key_row(page: str, key_id: str) -> str:
    """The table row of one key on a page (the dashboard's or the console's)."""
    return page[page.index(f'data-key-id="{key_id}"') :].split("</tr>")[0]


async def test_sign_in_gives_a_strict_httponly_cookie_and_never_keeps_the_key(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, real_redis: aioredis.Redis
) -> None:
    async with visitor() as client:
        signed = await sign_in(client, holder.api_key)
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        assert "Max-Age=120" in cookie and "Secure" not in cookie
        assert holder.api_key not in cookie
        token = client.cookies["cg_dashboard"]
        stored = await real_redis.get(keys.ui_session(digest(token)))
        assert stored is not None and holder.api_key not in stored and token not in stored
        assert 0 < await real_redis.ttl(keys.ui_session(digest(token))) <= 120
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert 'id="credits-left">5<' in page.text
        assert holder.api_key not in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text and "<svg" in page.text
    async with visitor("https://gw") as secure:
        assert "Secure" in (await sign_in(secure, holder.api_key)).headers["set-cookie"]


async def test_a_wrong_key_is_refused_and_no_cookie_is_set(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount
) -> None:
    async with visitor() as client:
        refused = await sign_in(client, "cg_" + "x" * 40)
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers
        assert "Unknown or revoked API key" in refused.text


async def test_an_expired_session_signs_out(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, real_redis: aioredis.Redis
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        token = client.cookies["cg_dashboard"]
        await real_redis.delete(keys.ui_session(digest(token)))  # what the TTL does
        page = await client.get("/dashboard")
        assert "Sign in to your dashboard" in page.text
        assert 'id="credits-left"' not in page.text


async def test_writes_without_the_csrf_token_or_from_another_site_are_refused(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        page = await client.get("/dashboard")
        csrf = csrf_of(page.text)
        missing = await client.post("/dashboard/keys", data={"name": "ci"})
        assert missing.status_code == 403
        wrong = await client.post("/dashboard/keys", data={"name": "ci", "csrf": csrf + "x"})
        assert wrong.status_code == 403
        elsewhere = await client.post(
            "/dashboard/keys",
            data={"name": "ci", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
        assert nonce is not None
        form = {"name": "ci", "csrf": csrf, "nonce": nonce.group(1)}
        made = await client.post("/dashboard/keys", data=form)
        assert made.status_code == 200
        secret = re.search(r'id="new-key" readonly value="(cg_[^"]+)"', made.text)
        assert secret is not None
        again = await client.get("/dashboard")
        assert secret.group(1) not in again.text  # shown once
        assert again.text.count("data-key-id=") == 2
        resent = await client.post("/dashboard/keys", data=form)  # a reload of that answer
        assert "sent already" in resent.text and 'id="new-key"' not in resent.text
        assert resent.text.count("data-key-id=") == 2


async def test_a_revoked_keys_session_ends(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        assert 'id="credits-left"' in (await client.get("/dashboard")).text
        await revoke_key(services, holder.account_id, holder.key_id)
        page = await client.get("/dashboard")
        assert "Sign in to your dashboard" in page.text
        # Signing in again with it (a replica may still hold it cached for a moment) leads
        # to no page either.
        await sign_in(client, holder.api_key)
        assert "Sign in to your dashboard" in (await client.get("/dashboard")).text


async def test_signing_out_ends_the_session(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        token = client.cookies["cg_dashboard"]
        csrf = csrf_of((await client.get("/dashboard")).text)
        out = await client.post("/dashboard/signout", data={"csrf": csrf})
        assert out.status_code == 303
        client.cookies.set("cg_dashboard", token, path="/dashboard")  # a stolen copy
        assert "Sign in to your dashboard" in (await client.get("/dashboard")).text


async def test_a_sign_in_link_works_once(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    token = await SignIns(services.redis).mint(holder.account_id, holder.key_id)
    async with visitor() as client:
        first = await client.get("/dashboard/signin", params={"token": token})
        assert first.status_code == 303
        assert 'id="credits-left"' in (await client.get("/dashboard")).text
    async with visitor() as other:
        second = await other.get("/dashboard/signin", params={"token": token})
        assert second.status_code == 401


async def test_the_console_needs_the_token_and_grants_once_per_form(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount
) -> None:
    async with visitor() as client:
        assert "Admin token" in (await client.get("/admin/ui")).text
        refused = await client.post("/admin/ui/signin", data={"secret": "wrong"})
        assert refused.status_code == 401
        blind = await client.post(
            "/admin/ui/accounts/acme/grant", data={"credits": "5", "reason": "x"}
        )
        assert blind.status_code == 403
        signed = await client.post("/admin/ui/signin", data={"secret": ADMIN_TOKEN})
        assert signed.status_code == 303 and "Path=/admin/ui" in signed.headers["set-cookie"]
        home = await client.get("/admin/ui", params={"q": "acm"})
        assert ADMIN_TOKEN not in home.text
        assert 'href="/admin/ui/accounts/acme"' in home.text
        page = await client.get("/admin/ui/accounts/acme")
        form = {
            "csrf": csrf_of(page.text),
            "idempotency_key": "form-1",
            "credits": "40",
            "reason": "goodwill",
        }
        done = await client.post("/admin/ui/accounts/acme/grant", data=form)
        assert "grant: done" in done.text
        assert 'id="credits-left">45<' in done.text
        again = await client.post("/admin/ui/accounts/acme/grant", data=form)
        assert "applied before" in again.text
        assert 'id="credits-left">45<' in again.text
        no_csrf = await client.post(
            "/admin/ui/accounts/acme/grant", data={**form, "csrf": "", "idempotency_key": "f2"}
        )
        assert no_csrf.status_code == 403
        bad = await client.post(
            "/admin/ui/accounts/acme/grant", data={**form, "credits": "-3", "idempotency_key": "f3"}
        )
        assert 'role="alert"' in bad.text


async def test_a_key_with_limits_is_offered_no_key_forms_and_refused_if_it_posts_one(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    limited = await create_key(
        services, holder.account_id, name="ci", limits=KeyLimits(credit_limit=1)
    )
    async with visitor() as client:
        await sign_in(client, limited.api_key)
        page = await client.get("/dashboard")
        assert page.text.count("data-key-id=") == 2
        assert 'id="keys-limited"' in page.text and "limits of its own" in page.text
        assert 'action="/dashboard/keys"' not in page.text and "/limits" not in page.text
        assert "/revoke" not in page.text
        csrf = csrf_of(page.text)  # the sign-out form's
        made = await client.post(
            "/dashboard/keys", data={"name": "more", "csrf": csrf, "nonce": "n-1"}
        )
        assert "cannot manage keys" in made.text and 'id="new-key"' not in made.text
        revoked = await client.post(f"/dashboard/keys/{holder.key_id}/revoke", data={"csrf": csrf})
        assert "cannot manage keys" in revoked.text
        freed = await client.post(
            f"/dashboard/keys/{limited.key_id}/limits",
            data={"csrf": csrf, "nonce": "n-2", "credit_limit": ""},
        )
        assert "cannot manage keys" in freed.text
    keys_now = await list_keys(services, holder.account_id)
    assert len(keys_now) == 2 and not any(k.revoked for k in keys_now)
    assert [k.credit_limit for k in keys_now if k.key_id == limited.key_id] == [1]


def nonce_of(html: str, form_action: str) -> str:
    """The one-time nonce of the form posting to ``form_action``."""
    found = re.search(
        rf'action="{re.escape(form_action)}"[^>]*>\s*(?:<h3>[^<]*</h3>\s*)?'
        r'<input type="hidden" name="csrf" value="[^"]+">\s*'
        r'<input type="hidden" name="nonce" value="([^"]+)">',
        html,
    )
    assert found is not None, f"the page has a form to {form_action}"
    return found.group(1)


async def test_a_key_made_with_limits_shows_them_and_its_spend_against_its_limit(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        page = (await client.get("/dashboard")).text
        form = {
            "csrf": csrf_of(page),
            "nonce": nonce_of(page, "/dashboard/keys"),
            "name": "laptop",
            "expires_at": "2099-01-31T12:30",
            "credit_limit": "4",
            "requests_per_minute": "30",
            "more_routes": "/api/projects/lint",
        }
        made = await client.post("/dashboard/keys", data={**form, "routes": ["/api/review/"]})
        assert made.status_code == 200 and 'id="new-key"' in made.text
        new = [k for k in await list_keys(services, "acme") if k.name == "laptop"][0]
        assert (new.credit_limit, new.requests_per_minute) == (4, 30)
        assert new.routes == ("/api/review", "/api/projects/lint")
        assert new.expires_at is not None and new.expires_at.isoformat().startswith(
            "2099-01-31T12:30"
        )
        rules = KeyRules(new.key_id, credit_limit=4)
        held = await services.credits.reserve("acme", "r1", 3, key_id=new.key_id, rules=rules)
        assert held.status == "ok"
        shown = (await client.get("/dashboard")).text
        row = key_row(shown, new.key_id)
        assert "3 / 4 credits" in row and "30 requests/min" in row
        assert "expires 2099-01-31 12:30 UTC" in row and "/api/review, /api/projects/lint" in row
        edit = shown[shown.index(f'id="edit-{new.key_id}"') :].split("</details>")[0]
        assert 'value="2099-01-31T12:30"' in edit and 'value="/api/projects/lint"' in edit
        assert 'value="/api/review/" checked' in edit
        assert 'value="/api/projects/" checked' not in edit


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("credit_limit", "-1", "field 'creditLimit' must be between 0 and"),
        ("credit_limit", "lots", "field 'creditLimit' must be an integer"),
        ("requests_per_minute", "0", "field 'requestsPerMinute' must be between 1 and"),
        ("expires_at", "2001-01-01T00:00", "field 'expiresAt' must be in the future"),
        ("expires_at", "soon", "field 'expiresAt' is not an ISO 8601 date-time"),
        ("more_routes", "/nowhere", "is not under any proxied route"),
    ],
)
async def test_a_bad_field_shows_the_form_again_with_its_error_next_to_it(
    visitor: Callable[..., httpx.AsyncClient],
    holder: CreatedAccount,
    services: Services,
    field: str,
    value: str,
    said: str,
) -> None:
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        page = (await client.get("/dashboard")).text
        nonce = nonce_of(page, "/dashboard/keys")
        form = {"csrf": csrf_of(page), "nonce": nonce, "name": "kept", field: value}
        refused = await client.post("/dashboard/keys", data=form)
        assert refused.status_code == 200
        assert refused.headers["content-type"].startswith("text/html")
        page_now = html.unescape(refused.text)
        create = page_now[page_now.index('id="create-key"') :].split("</form>")[0]
        assert 'id="key-error"' in create and said in create
        assert 'id="key-name" name="name" maxlength="100" value="kept"' in create
        assert 'id="new-key"' not in refused.text
        assert len(await list_keys(services, "acme")) == 1
        fixed = await client.post("/dashboard/keys", data={**form, field: ""})  # same nonce
        assert 'id="new-key"' in fixed.text  # the refused form did not use it up


async def test_a_keys_limits_are_changed_by_its_edit_form_once(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    made = await create_key(services, "acme", name="ci", limits=KeyLimits(credit_limit=2))
    action = f"/dashboard/keys/{made.key_id}/limits"
    async with visitor() as client:
        await sign_in(client, holder.api_key)
        page = (await client.get("/dashboard")).text
        csrf = csrf_of(page)
        form = {
            "csrf": csrf,
            "nonce": nonce_of(page, action),
            "name": "ci-2",
            "credit_limit": "9",
            "requests_per_minute": "",
        }
        no_csrf = await client.post(action, data={**form, "csrf": ""})
        assert no_csrf.status_code == 403
        bad = await client.post(action, data={**form, "credit_limit": "-5"})
        edit = bad.text[bad.text.index(f'id="edit-{made.key_id}" open') :].split("</details>")[0]
        assert f'id="edit-{made.key_id}-error"' in edit and "creditLimit" in edit
        assert 'value="-5"' in edit
        saved = await client.post(action, data=form)
        assert "Limits of key ci-2 saved." in saved.text
        row = key_row(saved.text, made.key_id)
        assert "0 / 9 credits" in row
        again = await client.post(action, data={**form, "credit_limit": "1"})
        assert "sent already" in again.text
        other = nonce_of(saved.text, action)
        cleared = await client.post(action, data={**form, "nonce": other, "credit_limit": ""})
        assert "saved" in cleared.text
        gone = await client.post(
            "/dashboard/keys/key_00000000/limits", data={**form, "nonce": "n-x"}
        )
        assert 'role="alert"' in gone.text and "not found" in gone.text
    changed = [k for k in await list_keys(services, "acme") if k.key_id == made.key_id][0]
    assert (changed.name, changed.credit_limit, changed.limited) == ("ci-2", None, False)


async def console_page(client: httpx.AsyncClient) -> str:
    assert (await client.post("/admin/ui/signin", data={"secret": ADMIN_TOKEN})).status_code == 303
    return (await client.get("/admin/ui/accounts/acme")).text


async def test_the_console_creates_a_limited_key_once_per_form_and_shows_its_spend(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    async with visitor() as client:
        page = await console_page(client)
        form = {
            "csrf": csrf_of(page),
            "idempotency_key": "key-form-1",
            "name": "partner",
            "credit_limit": "6",
            "routes": ["/api/projects/"],
            "reason": "partner trial",
        }
        blind = await client.post("/admin/ui/accounts/acme/keys", data={**form, "csrf": "x"})
        assert blind.status_code == 403
        unreasoned = await client.post("/admin/ui/accounts/acme/keys", data={**form, "reason": ""})
        assert "field &#39;reason&#39; must not be empty" in unreasoned.text
        made = await client.post("/admin/ui/accounts/acme/keys", data=form)
        assert "Key created." in made.text
        secret = re.search(r'id="new-key" readonly value="(cg_[^"]+)"', made.text)
        assert secret is not None
        again = await client.post("/admin/ui/accounts/acme/keys", data=form)
        assert "applied before" in again.text and secret.group(1) not in again.text
        keys_now = await list_keys(services, "acme")
        assert len(keys_now) == 2
        new = [k for k in keys_now if k.name == "partner"][0]
        assert (new.credit_limit, new.routes) == (6, ("/api/projects",))
        rules = KeyRules(new.key_id, credit_limit=6)
        held = await services.credits.reserve("acme", "c1", 2, key_id=new.key_id, rules=rules)
        assert held.status == "ok"
        shown = (await client.get("/admin/ui/accounts/acme")).text
        row = key_row(shown, new.key_id)
        assert "2 / 6 credits" in row and "routes /api/projects" in row
        bad = await client.post(
            "/admin/ui/accounts/acme/keys",
            data={**form, "idempotency_key": "key-form-2", "requests_per_minute": "0"},
        )
        create = html.unescape(bad.text[bad.text.index('id="create-key"') :].split("</form>")[0])
        assert "field 'requestsPerMinute' must be between 1" in create
        assert len(await list_keys(services, "acme")) == 2


async def test_the_console_changes_a_keys_limits_once_per_form(
    visitor: Callable[..., httpx.AsyncClient], holder: CreatedAccount, services: Services
) -> None:
    action = f"/admin/ui/accounts/acme/keys/{holder.key_id}/limits"
    async with visitor() as client:
        page = await console_page(client)
        assert f'action="{action}"' in page
        form = {
            "csrf": csrf_of(page),
            "idempotency_key": "edit-1",
            "name": "default",
            "credit_limit": "3",
            "reason": "cap the default key",
        }
        saved = await client.post(action, data=form)
        assert f"Limits of key {holder.key_id} saved." in saved.text
        row = key_row(saved.text, holder.key_id)
        assert "0 / 3 credits" in row
        again = await client.post(action, data=form)
        assert "applied before" in again.text
        bad = await client.post(
            action, data={**form, "idempotency_key": "edit-2", "expires_at": "2000-01-01T00:00"}
        )
        edit = bad.text[bad.text.index(f'id="edit-{holder.key_id}" open') :].split("</details>")[0]
        assert f'id="edit-{holder.key_id}-error"' in edit and "in the future" in edit
        assert 'value="2000-01-01T00:00"' in edit
    changed = (await list_keys(services, "acme"))[0]
    assert (changed.credit_limit, changed.expires_at) == (3, None)


async def test_the_consoles_sync_lag_is_the_oldest_movement_the_store_lacks(
    visitor: Callable[..., httpx.AsyncClient], services: Services, holder: CreatedAccount
) -> None:
    """Read from the outboxes, as the sync workers' lag metric is: the account's opening
    waits in its bucket's outbox until a sync pass copies it to the store."""
    async with visitor() as client:
        await client.post("/admin/ui/signin", data={"secret": ADMIN_TOKEN})
        behind = await client.get("/admin/ui")
        assert re.search(r"Sync lag</span>\d+\.\d s \(the oldest movement", behind.text)
        await SyncWorker(services).sync()
        synced = await client.get("/admin/ui")
        assert "Sync lag</span>none: the store has every movement" in synced.text
