"""The /admin endpoints: parse and check, call gateway.accounts.operations, render with views.

Every handler runs behind ``admin_endpoint``: the bearer token is checked in constant time
(no token configured: 503 for every path), and ``CreditgateError`` becomes the contract's
JSON error (``gateway.errors.error_response``). Changes are attributed ``"admin: <reason>"``
in the ledger.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.accounts import operations as accounts
from gateway.accounts import validation
from gateway.admin.views import account_view, key_view, ledger_view, record_view
from gateway.errors import (
    AdminDisabled,
    CreditgateError,
    InvalidRequest,
    Unauthorized,
    error_response,
)
from gateway.services import Services

log = logging.getLogger("creditgate.admin")

ACTOR = "admin"
MAX_PAGE = 200

Handler = Callable[[Request], Awaitable[Response]]


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def check_admin(request: Request) -> None:
    token = services_of(request).settings.admin_token
    if not token:
        raise AdminDisabled("the admin API is disabled: set CREDITGATE_ADMIN_TOKEN to enable it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Unauthorized("a valid admin bearer token is required")


def admin_endpoint(handler: Handler) -> Handler:
    """Guard a handler with the admin token and map errors to the contract's JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            check_admin(request)
            return await handler(request)
        except CreditgateError as exc:
            return await error_response(request, exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def ok(status: int = 200, **body: Any) -> JSONResponse:
    return JSONResponse({"success": True, **body}, status_code=status)


async def body_of(request: Request) -> dict[str, Any]:
    return validation.json_object(await request.body())


def path_account(request: Request) -> str:
    return validation.account_id(request.path_params["account_id"], field="id")


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    validation.only_fields(request.query_params, allowed)
    return dict(request.query_params)


def _limit(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"query 'limit' must be an integer between 1 and {MAX_PAGE}")
    return int(raw)


async def create_account(request: Request) -> Response:
    services = services_of(request)
    wanted = validation.create_account(await body_of(request), services.settings.tiers)
    created = await accounts.create_account(
        services,
        account_id=wanted.account_id,
        email=wanted.email,
        tier=wanted.tier,
        months=wanted.months,
        reason=accounts.attributed(ACTOR, wanted.reason or "account created"),
    )
    report = await accounts.account_report(services, created.account_id)
    return ok(
        201,
        account=account_view(created.state, report.record, report.keys),
        apiKey=created.api_key,
        keyId=created.key_id,
    )


async def list_accounts(request: Request) -> Response:
    query = _query(request, ("limit", "after"))
    limit = _limit(query.get("limit"), 100)
    after = query.get("after")
    if after is not None:
        after = validation.account_id(after, field="after")
    records = await accounts.list_accounts(services_of(request), limit=limit, after=after)
    following = records[-1].account_id if len(records) == limit else None
    return ok(accounts=[record_view(r) for r in records], next=following)


async def show_account(request: Request) -> Response:
    report = await accounts.account_report(services_of(request), path_account(request))
    return ok(account=account_view(report.state, report.record, report.keys))


async def upgrade(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    wanted = validation.upgrade(await body_of(request), services.settings.tiers)
    state = await accounts.change_tier(
        services,
        account_id,
        "upgrade",
        tier=wanted.tier,
        months=wanted.months,
        reason=accounts.attributed(ACTOR, wanted.reason),
    )
    return ok(account=account_view(state))


async def renew(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    wanted = validation.renew(await body_of(request))
    state = await accounts.change_tier(
        services,
        account_id,
        "renew",
        months=wanted.months,
        reason=accounts.attributed(ACTOR, wanted.reason),
    )
    return ok(account=account_view(state))


async def downgrade(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    wanted = validation.downgrade(await body_of(request))
    state = await accounts.change_tier(
        services, account_id, "downgrade", reason=accounts.attributed(ACTOR, wanted.reason)
    )
    return ok(account=account_view(state))


async def grant(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    wanted = validation.grant(await body_of(request))
    state = await accounts.grant(
        services, account_id, wanted.credits, reason=accounts.attributed(ACTOR, wanted.reason)
    )
    return ok(account=account_view(state))


async def create_key(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    wanted = validation.create_key(await body_of(request))
    key = await accounts.create_key(services, account_id, name=wanted.name)
    return ok(201, apiKey=key.api_key, keyId=key.key_id, prefix=key.display_prefix)


async def list_keys(request: Request) -> Response:
    keys = await accounts.list_keys(services_of(request), path_account(request))
    return ok(keys=[key_view(k) for k in keys])


async def revoke_key(request: Request) -> Response:
    account_id = path_account(request)
    key_id = validation.key_id(request.path_params["key_id"])
    revoked = await accounts.revoke_key(services_of(request), account_id, key_id)
    return ok(key=key_view(revoked))


async def ledger(request: Request) -> Response:
    services = services_of(request)
    account_id = path_account(request)
    query = _query(request, ("limit", "before"))
    limit = _limit(query.get("limit"), 50)
    before = query.get("before")
    if before is not None:
        before = validation.ledger_cursor(before)
    page = await accounts.ledger_page(services, account_id, limit=limit, before=before)
    return ok(entries=[ledger_view(e) for e in page.entries], next=page.next)
