"""The account holder's dashboard at ``/dashboard``: sign in with an API key, see credits,
usage charts, the recent ledger and the keys with their limits and spend this period; create
a key with limits (shown once), change a key's limits, revoke keys.

Sign-in exchanges the key for a session cookie (``gateway.ui.sessions``): the key is checked
like a proxied call's, then forgotten. A session ends at its TTL, at sign-out, and as soon as
its key is revoked or expires (checked on every page); a key with limits of its own may see
the keys but not create, change or revoke any (the page offers no such form then, and says
why). Writes need the session's CSRF token; the key forms are checked by
``gateway.accounts.keyfields``, as ``/api/user/keys`` is, their errors shown next to them.
``GET /dashboard/signin?token=`` redeems a one-time sign-in token (``creditgate demo``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounts import keyfields, validation
from gateway.accounts import operations as accounts
from gateway.accounts.keycache import KeyCache
from gateway.errors import CreditgateError, Unauthorized
from gateway.services import Services
from gateway.ui import keyforms, pages
from gateway.ui.sessions import Session, SignIns, first_use, form_nonce, sessions_of
from gateway.ui.views import account_page, open_edit
from store.records import ApiKeyRecord

COOKIE = "cg_dashboard"
PATH = "/dashboard"
LIMITED = "A key with its own limits cannot manage keys: sign in with another key."


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _session(request: Request) -> Session | None:
    """The caller's live session whose key is still active; a revoked key's session ends."""
    token = request.cookies.get(COOKIE)
    sessions = sessions_of(_services(request))
    session = await sessions.find(token, "holder")
    if session is None or session.account_id is None:
        return None
    keys = await accounts.list_keys(_services(request), session.account_id)
    now = datetime.now(UTC)
    signed_with = [k for k in keys if k.key_id == session.key_id]
    if not any(not k.revoked and (k.expires_at is None or k.expires_at > now) for k in signed_with):
        await sessions.end(token)
        return None
    return session


async def _may_manage_keys(request: Request, session: Session) -> bool:
    """False when the session's key has limits of its own: such a key cannot manage keys (as
    on ``/api/user/keys``), or a key limited to a few credits could make an unlimited one."""
    assert session.account_id is not None
    return not _limited(session, await accounts.list_keys(_services(request), session.account_id))


def _limited(session: Session, keys: list[ApiKeyRecord]) -> bool:
    return any(k.key_id == session.key_id and k.limited for k in keys)


def _signin_page(error: str | None = None, status: int = 200) -> Response:
    return pages.render(
        "signin.html",
        status,
        title="Sign in to your dashboard",
        area="Dashboard",
        action="/dashboard/signin",
        label="API key",
        hint="Your key is exchanged for a session of this browser and is not kept in it.",
        error=error,
    )


async def dashboard(
    request: Request,
    *,
    notice: str | None = None,
    edit: tuple[str, keyforms.KeyForm] | None = None,
    **more: Any,
) -> Response:
    """The page; ``edit``: a key's edit form shown open with the values sent (next to
    ``edit_error``), or, when the key has no form (unknown, revoked), that error on top."""
    session = await _session(request)
    if session is None or session.account_id is None:
        response = _signin_page()
        if COOKIE in request.cookies:
            pages.clear_session_cookie(response, request, COOKIE, path=PATH)
        return response
    context = await account_page(_services(request), session.account_id)
    context.update(more)
    refused = open_edit(context, edit)
    if refused is not None:
        context["error"] = refused
    return pages.render(
        "dashboard.html",
        title="Dashboard",
        area="Dashboard",
        signout="/dashboard/signout",
        csrf=session.csrf,
        nonce=form_nonce(),
        new_nonce=form_nonce,
        notice=notice,
        may_manage=not _limited(session, context["keys"]),
        **context,
    )


async def _start(request: Request, account_id: str, key_id: str) -> Response:
    sessions = sessions_of(_services(request))
    await sessions.end(request.cookies.get(COOKIE))
    token = await sessions.start("holder", account_id=account_id, key_id=key_id)
    response = pages.redirect(PATH)
    pages.set_session_cookie(response, request, COOKIE, token, path=PATH, ttl_s=sessions.ttl_s)
    return response


async def signin(request: Request) -> Response:
    if request.method == "GET":
        redeemed = await SignIns(_services(request).redis).redeem(
            request.query_params.get("token", "")
        )
        if redeemed is None:
            return _signin_page("That sign-in link is used or expired: sign in with your key.", 401)
        return await _start(request, *redeemed)
    if not pages.same_origin(request):
        return _signin_page("Sign-in refused: the form came from another site.", 403)
    secret = (await pages.form(request)).get("secret", "").strip()
    keys: KeyCache = request.app.state.keys
    try:
        caller = await keys.authenticate(f"Bearer {secret}")
    except Unauthorized:
        return _signin_page("Unknown or revoked API key.", 401)
    return await _start(request, caller.account_id, caller.key_id)


async def _write(request: Request) -> tuple[Session, dict[str, str]]:
    """The session of a write, its CSRF token checked; the form's fields."""
    session = await _session(request)
    if session is None:
        raise Unauthorized("sign in first")
    fields = await pages.form(request)
    if not pages.same_origin(request) or not session.csrf_ok(fields.get("csrf")):
        raise pages.CsrfRefused("the form's CSRF token is missing or wrong: reload the page")
    return session, fields


async def _key_write(request: Request) -> tuple[Session, str, dict[str, str]] | Response:
    """A write to the session's keys (``_write``): the session, its account and the form's
    fields; or the answer refusing it: no session or CSRF token, or a key with limits of its
    own (``_may_manage_keys``)."""
    try:
        session, fields = await _write(request)
    except CreditgateError as exc:
        return _refused(exc)
    if session.account_id is None or not await _may_manage_keys(request, session):
        return await dashboard(request, error=LIMITED)
    return session, session.account_id, fields


async def create_key(request: Request) -> Response:
    """A new key with the limits of the form, checked as ``/api/user/keys`` checks them; its
    secret shown once. A form sent again (its nonce used) makes no second key."""
    managing = await _key_write(request)
    if isinstance(managing, Response):
        return managing
    session, account_id, fields = managing
    services = _services(request)
    checked = await pages.form_values(request, "routes")
    try:
        wanted = keyfields.create_key(
            keyforms.key_body(fields, checked),
            keyfields.configured_routes(services.settings),
            now=datetime.now(UTC),
        )
    except CreditgateError as exc:
        form = keyforms.form_of(fields, checked)
        return await dashboard(request, create_error=exc.message, create_form=form)
    if not await first_use(services.redis, fields.get("nonce", "")):
        return await dashboard(
            request, error="That form was sent already (its key was shown once): not created again."
        )
    key = await accounts.create_key(services, account_id, name=wanted.name, limits=wanted.limits)
    return await dashboard(
        request, notice="Key created.", new_key={"name": wanted.name, **asdict(key)}
    )


async def change_limits(request: Request) -> Response:
    """A key's name and limits set to the edit form's (an emptied field clears that limit)."""
    managing = await _key_write(request)
    if isinstance(managing, Response):
        return managing
    session, account_id, fields = managing
    services = _services(request)
    key_id = validation.key_id(request.path_params["key_id"], field="key")
    checked = await pages.form_values(request, "routes")
    try:
        changes = keyfields.key_changes(
            keyforms.key_body(fields, checked),
            keyfields.configured_routes(services.settings),
            now=datetime.now(UTC),
        )
        if not await first_use(services.redis, fields.get("nonce", "")):
            return await dashboard(request, error="That form was sent already: not applied again.")
        changed = await accounts.update_key(services, account_id, key_id, changes=changes)
    except CreditgateError as exc:
        return await dashboard(
            request, edit=(key_id, keyforms.form_of(fields, checked)), edit_error=exc.message
        )
    return await dashboard(request, notice=f"Limits of key {changed.name or key_id} saved.")


async def revoke_key(request: Request) -> Response:
    managing = await _key_write(request)
    if isinstance(managing, Response):
        return managing
    session, account_id, _ = managing
    key_id = validation.key_id(request.path_params["key_id"], field="key")
    try:
        await accounts.revoke_key(_services(request), account_id, key_id)
    except CreditgateError as exc:
        return await dashboard(request, error=exc.message)
    if key_id == session.key_id:
        await sessions_of(_services(request)).end(request.cookies.get(COOKIE))
        response = _signin_page("You revoked the key you signed in with: signed out.")
        pages.clear_session_cookie(response, request, COOKIE, path=PATH)
        return response
    return pages.redirect(PATH)


async def signout(request: Request) -> Response:
    try:
        await _write(request)
    except CreditgateError as exc:
        return _refused(exc)
    await sessions_of(_services(request)).end(request.cookies.get(COOKIE))
    response = pages.redirect(PATH)
    pages.clear_session_cookie(response, request, COOKIE, path=PATH)
    return response


def _refused(exc: CreditgateError) -> Response:
    return _signin_page(exc.message, exc.status)


def dashboard_routes() -> list[Route]:
    return [
        pages.route(PATH, dashboard, methods=["GET"]),
        pages.route(f"{PATH}/signin", signin, methods=["GET", "POST"]),
        pages.route(f"{PATH}/keys", create_key, methods=["POST"]),
        pages.route(f"{PATH}/keys/{{key_id}}/revoke", revoke_key, methods=["POST"]),
        pages.route(f"{PATH}/keys/{{key_id}}/limits", change_limits, methods=["POST"]),
        pages.route(f"{PATH}/signout", signout, methods=["POST"]),
        *pages.static_routes(),
    ]
