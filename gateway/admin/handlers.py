"""The HTTP side of the admin operations: the admin token, and an endpoint per operation.

Every endpoint runs behind ``admin_endpoint``: the bearer token is checked in constant time
(no token configured: 503 for every path), and ``CreditgateError`` becomes the contract's
JSON error (``gateway.errors.error_response``). What an endpoint does is its entry of
``gateway.admin.operations``, called as the ``API`` front end (changes attributed
``"admin: <reason>"``); it answers ``{"success": true, ...}`` with the entry's status. A
write's ``Idempotency-Key`` header goes with the call; a replayed first answer says so with
``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.accounts import validation
from gateway.accounts.keycache import authorization_of
from gateway.admin.operations import API, Call, Operation
from gateway.bodies import BODY_LIMIT, read_body
from gateway.errors import (
    AdminDisabled,
    CreditgateError,
    Unauthorized,
    error_response,
)
from gateway.services import Services

Handler = Callable[[Request], Awaitable[Response]]

ADMIN_BODY_LIMIT = BODY_LIMIT
"""The largest admin request body read (gateway.bodies): past it, 413 and the rest unread."""


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def check_admin(request: Request) -> None:
    token = services_of(request).settings.admin_token
    if not token:
        raise AdminDisabled("the admin API is disabled: set CREDITGATE_ADMIN_TOKEN to enable it")
    scheme, _, given = (authorization_of(request.scope["headers"]) or "").partition(" ")
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


def operation_endpoint(operation: Operation) -> Handler:
    """The guarded endpoint that serves ``operation`` over HTTP."""

    async def serve(request: Request) -> Response:
        raw: list[bytes] = []  # read once: an operation may ask for its body more than once

        async def body() -> dict[str, Any]:
            if not raw:
                raw.append(await read_body(request))
            return validation.json_object(raw[0])

        call = Call(
            API,
            path=request.path_params,
            query=dict(request.query_params),
            body=body,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        outcome = await operation.perform(services_of(request), call)
        return JSONResponse(
            {"success": True, **outcome.answer},
            status_code=operation.status,
            headers={"Idempotent-Replayed": "true"} if outcome.replayed else None,
        )

    serve.__name__ = operation.name
    return admin_endpoint(serve)
