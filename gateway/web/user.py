"""The account holder's own endpoints, authenticated by their API key.

``GET /api/user/usage`` reads the account's live state (restored from the store if Redis lost
it); it costs nothing and touches no rate.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.accounts.keycache import Caller, KeyCache, authorization_of
from gateway.accounts.restore import restore_from_store
from gateway.accounts.usage import usage_body
from gateway.errors import Unauthorized
from gateway.services import Services


async def caller_of(request: Request) -> Caller:
    """The caller of an account holder's endpoint, by the request's one ``Authorization``."""
    keys: KeyCache = request.app.state.keys
    return await keys.authenticate(authorization_of(request.scope["headers"]))


async def user_usage(request: Request) -> Response:
    """``GET /api/user/usage``: the caller's account; costs nothing, touches no rate."""
    services: Services = request.app.state.services
    caller = await caller_of(request)
    state = await services.credits.status(caller.account_id)
    if state is None:
        state = await restore_from_store(services, caller.account_id)
    if state is None:
        raise Unauthorized("unknown account")
    return JSONResponse({"success": True, "usage": usage_body(state)})


def user_routes() -> list[Route]:
    return [Route("/api/user/usage", user_usage, methods=["GET"])]
