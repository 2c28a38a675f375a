"""The /admin routes, mounted by ``create_app`` as ``Mount("/admin", routes=admin_routes())``.

Every path under /admin answers JSON: the last route catches what no other matched, so an
unknown path is a 404 ``not_found`` and a known path with the wrong method a 405, both
behind the admin token like the rest (no token configured: 503).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from gateway.admin import handlers
from gateway.admin.handlers import admin_endpoint
from gateway.errors import MethodNotAllowed, NotFound

ACCOUNT = "/accounts/{account_id}"


def admin_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/accounts", admin_endpoint(handlers.create_account), methods=["POST"]),
        Route("/accounts", admin_endpoint(handlers.list_accounts), methods=["GET"]),
        Route(ACCOUNT, admin_endpoint(handlers.show_account), methods=["GET"]),
        Route(f"{ACCOUNT}/keys", admin_endpoint(handlers.create_key), methods=["POST"]),
        Route(f"{ACCOUNT}/keys", admin_endpoint(handlers.list_keys), methods=["GET"]),
        Route(
            f"{ACCOUNT}/keys/{{key_id}}", admin_endpoint(handlers.revoke_key), methods=["DELETE"]
        ),
        Route(f"{ACCOUNT}/upgrade", admin_endpoint(handlers.upgrade), methods=["POST"]),
        Route(f"{ACCOUNT}/downgrade", admin_endpoint(handlers.downgrade), methods=["POST"]),
        Route(f"{ACCOUNT}/renew", admin_endpoint(handlers.renew), methods=["POST"]),
        Route(f"{ACCOUNT}/grant", admin_endpoint(handlers.grant), methods=["POST"]),
        Route(f"{ACCOUNT}/ledger", admin_endpoint(handlers.ledger), methods=["GET"]),
    ]
    known = list(routes)

    async def unmatched(request: Request) -> Response:
        allowed = sorted(
            {
                method
                for route in known
                if isinstance(route, Route)
                and route.methods
                and route.matches(request.scope)[0] is not Match.NONE
                for method in route.methods
            }
        )
        if allowed:
            raise MethodNotAllowed(f"{request.method} not allowed here; use {', '.join(allowed)}")
        raise NotFound(f"no admin endpoint at {request.url.path}")

    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes.append(Route("/{rest:path}", admin_endpoint(unmatched), methods=every))
    return routes
