"""The operators' console at ``/admin/ui``: sign in with the admin token, see the live
overview, find accounts, open one (usage, ledger, keys with their limits and spend) and act
on it: grant, change the tier, create a key with limits, change a key's limits, revoke one.

Mounted by ``create_app`` ahead of the /admin API. The admin token is exchanged for a session
cookie (``gateway.ui.sessions``), never kept in the browser. Each action is a form with a
reason, confirmed in the browser, sent with the session's CSRF token and an Idempotency-Key
minted with the page (a resubmitted form applies once), and run through the operations table
(``gateway.admin.operations``) as the ``console`` front end: the ledger says
``"console: <reason>"``. No admin token configured: the console is off (503), as the API.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

from gateway.accounts import history as usage
from gateway.accounts import operations as accounts
from gateway.accounts import validation
from gateway.admin.operations import OPERATIONS, Call, FrontEnd
from gateway.credits import outboxes
from gateway.errors import CreditgateError, Unavailable
from gateway.services import Services
from gateway.ui import keyforms, pages
from gateway.ui.keyforms import KeyForm
from gateway.ui.overview import Rate, overview
from gateway.ui.sessions import Session, sessions_of
from gateway.ui.views import account_page, chart_query, open_edit

COOKIE = "cg_console"
PATH = "/admin/ui"
"""Accounts a search looks through (by id order): a console, not a search engine."""

CONSOLE = FrontEnd(
    actor="console",
    key_id_field="key",
    page_limit=200,
    page_error="page size out of bounds",
    idempotency_field="the form",
)

ACTIONS = (
    {"name": "grant", "title": "Grant credits", "confirm": "Grant these bonus credits?"},
    {"name": "upgrade", "title": "Upgrade", "confirm": "Subscribe this account to the tier?"},
    {"name": "renew", "title": "Renew", "confirm": "Extend the subscription?"},
    {"name": "downgrade", "title": "Downgrade", "confirm": "Downgrade this account to free?"},
)
BY_NAME = {op.name: op for op in OPERATIONS}

log = logging.getLogger("creditgate.console")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _signin_page(error: str | None = None, status: int = 200) -> Response:
    return pages.render(
        "signin.html",
        status,
        title="Operators' console",
        area="Console",
        action=f"{PATH}/signin",
        label="Admin token",
        hint="The token is exchanged for a short session of this browser and is not kept in it.",
        error=error,
    )


async def _session(request: Request) -> Session | None:
    return await sessions_of(_services(request)).find(request.cookies.get(COOKIE), "operator")


def _enabled(request: Request) -> bool:
    return bool(_services(request).settings.admin_token)


async def home(request: Request) -> Response:
    if not _enabled(request):
        return _signin_page("The console is off: set CREDITGATE_ADMIN_TOKEN to enable it.", 503)
    session = await _session(request)
    if session is None:
        return _signin_page()
    services = _services(request)
    q = request.query_params.get("q", "").strip()[:100]
    found = await accounts.list_accounts(services, limit=50, containing=q)
    wanted = chart_query()
    top = await usage.top_accounts(
        services, usage.HistoryQuery(wanted.start, wanted.end, "account", "json", 10)
    )
    metrics = request.app.state.metrics
    metrics.flush()  # what it added up since its last flush (``gateway.metrics``)
    figures = overview(metrics.registry, _rate(request), await _lag(services))
    return pages.render(
        "console.html",
        title="Console",
        area="Console",
        signout=f"{PATH}/signout",
        csrf=session.csrf,
        accounts=found,
        q=q,
        top=top,
        overview=figures,
    )


def _rate(request: Request) -> Rate:
    state = request.app.state
    if not hasattr(state, "console_rate"):
        state.console_rate = Rate()
    rate: Rate = state.console_rate
    return rate


async def _lag(services: Services) -> str:
    """The store's lag behind Redis, as the sync workers' metric measures it."""
    try:
        behind = await outboxes.lag_ms(services.redis)
    except Unavailable:
        return "unknown: Redis cannot be read"
    if behind == 0:
        return "none: the store has every movement"
    return f"{behind / 1000:.1f} s (the oldest movement the store lacks)"


async def signin(request: Request) -> Response:
    token = _services(request).settings.admin_token
    if not token:
        return _signin_page("The console is off: set CREDITGATE_ADMIN_TOKEN to enable it.", 503)
    if not pages.same_origin(request):
        return _signin_page("Sign-in refused: the form came from another site.", 403)
    given = (await pages.form(request)).get("secret", "").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _signin_page("That is not the admin token.", 401)
    sessions = sessions_of(_services(request))
    await sessions.end(request.cookies.get(COOKIE))
    cookie = await sessions.start("operator")
    response = pages.redirect(PATH)
    pages.set_session_cookie(response, request, COOKIE, cookie, path=PATH, ttl_s=sessions.ttl_s)
    return response


async def _write(request: Request) -> dict[str, str] | Response:
    """The fields of an operator's form, or the sign-in page refusing it (403): no session,
    or its CSRF token missing or wrong."""
    session = await _session(request)
    if session is None or not _enabled(request):
        return _signin_page("sign in first", pages.CsrfRefused.status)
    fields = await pages.form(request)
    if not pages.same_origin(request) or not session.csrf_ok(fields.get("csrf")):
        message = "the form's CSRF token is missing or wrong: reload the page"
        return _signin_page(message, pages.CsrfRefused.status)
    return fields


async def account(
    request: Request,
    *,
    notice: str | None = None,
    error: str | None = None,
    edit: tuple[str, KeyForm] | None = None,
    **more: Any,
) -> Response:
    """An account's page; ``edit``: a key's edit form open with the values sent (next to
    ``edit_error``), or, when the key has no form (unknown, revoked), that error on top."""
    session = await _session(request)
    if session is None or not _enabled(request):
        return _signin_page()
    account_id = validation.account_id(request.path_params["account_id"], field="account")
    services = _services(request)
    try:
        context = await account_page(services, account_id)
    except CreditgateError as exc:
        return pages.render(
            "signin.html",
            exc.status,
            title="Console",
            area="Console",
            error=exc.message,
            action=f"{PATH}/signin",
            label="Admin token",
            hint="",
        )
    context.update(more)
    error = open_edit(context, edit) or error
    return pages.render(
        "console_account.html",
        title=f"Account {account_id}",
        area="Console",
        signout=f"{PATH}/signout",
        csrf=session.csrf,
        actions=ACTIONS,
        tiers=sorted(t for t in services.settings.tiers if t != "free"),
        idempotency=secrets.token_urlsafe(12),
        notice=notice,
        error=error,
        **context,
    )


def _body(name: str, fields: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": fields.get("reason", "")}
    for number in ("credits", "months"):
        if number in fields:
            text = fields[number].strip()
            body[number] = int(text) if text.isascii() and text.lstrip("-").isdigit() else text
    if name == "upgrade":
        body["tier"] = fields.get("tier", "")
    return body


async def act(request: Request) -> Response:
    fields = await _write(request)
    if isinstance(fields, Response):
        return fields
    name = request.path_params["action"]
    if name not in {a["name"] for a in ACTIONS}:
        return await account(request, error=f"no action {name!r}")
    body = _body(name, fields)

    async def read_body() -> dict[str, Any]:
        return body

    call = Call(
        CONSOLE,
        path={"account_id": request.path_params["account_id"]},
        query={},
        body=read_body,
        idempotency_key=fields.get("idempotency_key") or None,
    )
    try:
        outcome = await BY_NAME[name].perform(_services(request), call)
    except CreditgateError as exc:
        return await account(request, error=exc.message)
    said = "applied before (the same form sent again)" if outcome.replayed else "done"
    return await account(request, notice=f"{name}: {said}.")


async def revoke_key(request: Request) -> Response:
    refused = await _write(request)
    if isinstance(refused, Response):
        return refused
    try:
        account_id = validation.account_id(request.path_params["account_id"], field="account")
        key_id = validation.key_id(request.path_params["key_id"], field="key")
        await accounts.revoke_key(_services(request), account_id, key_id)
    except CreditgateError as exc:
        return await account(request, error=exc.message)
    return await account(request, notice="Key revoked.")


async def key_limits(request: Request) -> Response:
    """Create a key with the form's limits, or set a key's name and limits to its edit form's:
    confirmed, with a reason (logged: a key change writes no ledger movement), applied once
    per form (its Idempotency-Key), through the operations table as the admin API does."""
    fields = await _write(request)
    if isinstance(fields, Response):
        return fields
    account_id = request.path_params["account_id"]
    key_id: str | None = request.path_params.get("key_id")
    checked = await pages.form_values(request, "routes")
    sent = keyforms.form_of(fields, checked)
    body = keyforms.key_body(fields, checked)

    async def read_body() -> dict[str, Any]:
        return body

    path = (
        {"account_id": account_id}
        if key_id is None
        else {"account_id": account_id, "key_id": key_id}
    )
    call = Call(
        CONSOLE,
        path=path,
        query={},
        body=read_body,
        idempotency_key=fields.get("idempotency_key") or None,
    )
    try:
        reason = validation.reason(fields.get("reason"), required=True)
        outcome = await BY_NAME["create_key" if key_id is None else "update_key"].perform(
            _services(request), call
        )
    except CreditgateError as exc:
        if key_id is None:
            return await account(request, create_error=exc.message, create_form=sent)
        return await account(request, edit=(key_id, sent), edit_error=exc.message)
    answer = outcome.answer
    if outcome.replayed:
        said = f"key {answer.get('keyId') or key_id}: applied before (the same form sent again)"
        return await account(request, notice=said + "; a new key's secret is shown once only.")
    log.info(
        "console: key %s of account %s %s: %s",
        answer.get("keyId") or key_id,
        account_id,
        "created" if key_id is None else "changed",
        reason,
    )
    if key_id is None:
        new_key = {
            "name": answer["key"]["name"],
            "key_id": answer["keyId"],
            "api_key": answer["apiKey"],
        }
        return await account(request, notice="Key created.", new_key=new_key)
    return await account(request, notice=f"Limits of key {key_id} saved.")


async def signout(request: Request) -> Response:
    refused = await _write(request)
    if isinstance(refused, Response):
        return refused
    await sessions_of(_services(request)).end(request.cookies.get(COOKIE))
    response = pages.redirect(PATH)
    pages.clear_session_cookie(response, request, COOKIE, path=PATH)
    return response


def console_routes() -> list[BaseRoute]:
    """``/admin/ui`` and what is under it: placed ahead of the /admin API's mount."""
    return [
        pages.route(PATH, home, methods=["GET"]),
        Mount(PATH, routes=_under()),
    ]


def _under() -> list[BaseRoute]:
    return [
        pages.route("/", home, methods=["GET"]),
        pages.route("/signin", signin, methods=["POST"]),
        pages.route("/signout", signout, methods=["POST"]),
        pages.route("/accounts/{account_id}", account, methods=["GET"]),
        pages.route("/accounts/{account_id}/keys", key_limits, methods=["POST"]),
        pages.route("/accounts/{account_id}/keys/{key_id}/limits", key_limits, methods=["POST"]),
        pages.route("/accounts/{account_id}/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
        pages.route("/accounts/{account_id}/{action}", act, methods=["POST"]),
    ]
