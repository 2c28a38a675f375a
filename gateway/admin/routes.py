"""The /admin routes, mounted by ``create_app`` as ``Mount("/admin", routes=admin_routes())``.

One route per entry of the operations table (``gateway.admin.operations``). Every path under
/admin answers JSON: the last route catches what no other matched, so an unknown path is a
404 ``not_found`` and a known path with the wrong method a 405, both behind the admin token
like the rest (no token configured: 503).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from gateway.admin.handlers import admin_endpoint, operation_endpoint
from gateway.admin.operations import OPERATIONS
from gateway.admin.usage import usage_routes
from gateway.errors import MethodNotAllowed, NotFound


def admin_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route(op.path, operation_endpoint(op), methods=[op.method], name=op.name)
        for op in OPERATIONS
    ]
    routes.extend(usage_routes())
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
