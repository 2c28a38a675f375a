"""Sends requests under a proxied prefix to the ``Proxy``; plain ASGI in front of Starlette."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.bodies import send_json, unavailable_body
from gateway.proxy import Proxy
from gateway.settings import Route


class ProxyRouter:
    """ASGI middleware: requests under a proxied prefix go to the ``Proxy``, the rest to ``app``.

    Prefixes are matched longest first. The ``Proxy`` is built by the lifespan, so this
    reads it from ``holder`` per request.
    """

    def __init__(self, app: ASGIApp, *, routes: list[Route], holder: ProxyHolder) -> None:
        self.app = app
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for route in self.routes:
                if path.startswith(route.prefix):
                    proxy = self.holder.proxy
                    if proxy is None:
                        await send_json(send, 503, unavailable_body())
                        return
                    await proxy.handle(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)


@dataclass(slots=True)
class ProxyHolder:
    proxy: Proxy | None = None
