"""The gateway's ASGI entry: proxied prefixes go straight to the ``Proxy``, the rest to Starlette.

Starlette wraps every request in its error middleware (a closure around ``send``, two more
coroutine frames) before any routing; on the proxy's hot path that is pure cost, so the
prefix match happens first, in front of all of it. An exception escaping the proxy still
gets the contract's JSON 500 when nothing was sent yet.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from gateway.errors import InvalidRequest, Unavailable, error_body
from gateway.proxy.bodies import send_error, send_json
from gateway.proxy.flow import Proxy
from gateway.settings import Route

UNROUTABLE = InvalidRequest(
    "the path may not contain dot segments ('.', '..'), encoded slashes or backslashes"
)


def routable(scope: Scope) -> bool:
    """Whether a proxied path stays, for the backend too, under the prefix it matched.

    ``scope["path"]`` is percent-decoded (``%2e%2e`` is ``..`` there) and what the backend
    sees once it resolves dot segments; ``/api/projects/../../admin`` would match the
    projects prefix yet name another resource upstream. Rather than resolve them (and
    forward a path other than the client's), any dot segment is refused, and so is a
    backslash (a separator to some servers) and an encoded slash or backslash in the raw path
    (``%2F`` decodes to a separator the prefix match never saw). Two substring tests on the
    common path; the raw path is only looked at when it has a ``%``. With these refused, the
    decoded raw path is ``scope["path"]``: the forwarded path and the signed one agree.
    """
    path: str = scope["path"]
    if "/." in path or "\\" in path:
        for segment in path.split("/"):
            if segment in (".", ".."):
                return False
        if "\\" in path:
            return False
    raw: bytes | None = scope.get("raw_path")
    if raw is not None and b"%" in raw:
        lower = raw.lower()
        if b"%2f" in lower or b"%5c" in lower:
            return False
    return True


class GatewayApp(Starlette):
    """Starlette, with the proxied prefixes (longest first) served before its middleware.

    The ``Proxy`` is built by the lifespan: ``proxy`` is None until then (answered 503).
    """

    proxy: Proxy | None = None
    proxy_routes: tuple[Route, ...] = ()

    def route_proxied(self, routes: list[Route]) -> None:
        self.proxy_routes = tuple(sorted(routes, key=lambda r: len(r.prefix), reverse=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for route in self.proxy_routes:
                if path.startswith(route.prefix):
                    if not routable(scope):
                        await send_error(send, UNROUTABLE, style=route.errors)
                        return
                    await self._proxy(route, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _proxy(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self.proxy
        if proxy is None:
            starting = Unavailable("the gateway is starting or stopping")
            await send_error(send, starting, style=route.errors)
            return
        try:
            await proxy.handle(route, scope, receive, send)
        except Exception:
            try:
                failed = error_body("internal_error", "internal error")
                await send_json(send, 500, failed, style=route.errors)
            except Exception:
                pass  # the answer had started (or the client left): the original error counts
            raise  # for the server to log, as Starlette's own error middleware does
