"""The account holder's own API keys: ``GET/POST /api/user/keys`` and
``PATCH/DELETE /api/user/keys/{keyId}``, authenticated by an API key of the account.

Only the caller's account's keys: another account's key id is 404, as an unknown one is.
The fields and their checks are the admin API's (gateway.accounts.keyfields); bodies are
bounded as the admin API's are (gateway.bodies). A key that carries limits of its own may list
the keys but not create, change or revoke any (403 ``forbidden``): otherwise a key limited to
a few credits could make itself an unlimited one. A new key's secret is in the create's
answer only. A change or a revocation applies on every replica within 1 s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.accounts import keyfields, validation
from gateway.accounts import operations as accounts
from gateway.accounts.keycache import Caller
from gateway.accounts.keyviews import key_views, one_key_view
from gateway.bodies import read_body
from gateway.errors import Forbidden
from gateway.services import Services
from gateway.web.user import caller_of

PATH = "/api/user/keys"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _manager(request: Request) -> Caller:
    """The caller, if its key may manage keys: one without limits of its own."""
    caller = await caller_of(request)
    if caller.rules is not None:
        raise Forbidden("a key with its own limits cannot manage keys")
    return caller


async def _body(request: Request) -> dict[str, Any]:
    return validation.json_object(await read_body(request))


def _key_id(request: Request) -> str:
    return validation.key_id(request.path_params["key_id"])


async def list_keys(request: Request) -> Response:
    """``GET /api/user/keys``: the account's keys, revoked ones included, without secrets."""
    caller = await caller_of(request)
    keys = await accounts.list_keys(_services(request), caller.account_id)
    views = await key_views(_services(request), caller.account_id, keys)
    return JSONResponse({"success": True, "keys": views})


async def create_key(request: Request) -> Response:
    """``POST /api/user/keys``: a new key of the caller's account; its secret is shown once."""
    caller = await _manager(request)
    services = _services(request)
    routes = keyfields.configured_routes(services.settings)
    wanted = keyfields.create_key(await _body(request), routes, now=datetime.now(UTC))
    key = await accounts.create_key(
        services, caller.account_id, name=wanted.name, limits=wanted.limits
    )
    answer: dict[str, Any] = {
        "success": True,
        "apiKey": key.api_key,
        "keyId": key.key_id,
        "prefix": key.display_prefix,
    }
    if key.record is not None:
        answer["key"] = await one_key_view(services, caller.account_id, key.record)
    return JSONResponse(answer, status_code=201)


async def update_key(request: Request) -> Response:
    """``PATCH /api/user/keys/{keyId}``: change a key's name or limits; null clears one."""
    caller = await _manager(request)
    key_id = _key_id(request)
    services = _services(request)
    routes = keyfields.configured_routes(services.settings)
    changes = keyfields.key_changes(await _body(request), routes, now=datetime.now(UTC))
    changed = await accounts.update_key(services, caller.account_id, key_id, changes=changes)
    view = await one_key_view(services, caller.account_id, changed)
    return JSONResponse({"success": True, "key": view})


async def revoke_key(request: Request) -> Response:
    """``DELETE /api/user/keys/{keyId}``: revoke a key (the caller's own too); idempotent."""
    caller = await _manager(request)
    key_id = _key_id(request)
    services = _services(request)
    revoked = await accounts.revoke_key(services, caller.account_id, key_id)
    view = await one_key_view(services, caller.account_id, revoked)
    return JSONResponse({"success": True, "key": view})


def key_routes() -> list[Route]:
    return [
        Route(PATH, list_keys, methods=["GET"]),
        Route(PATH, create_key, methods=["POST"]),
        Route(f"{PATH}/{{key_id}}", update_key, methods=["PATCH"]),
        Route(f"{PATH}/{{key_id}}", revoke_key, methods=["DELETE"]),
    ]
