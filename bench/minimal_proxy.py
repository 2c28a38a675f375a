"""The baselines for the proxy benchmark: pass-through proxies with no auth and no credits.

Same stack as the gateway (uvicorn with uvloop and httptools, one pooled
``aiohttp.ClientSession``), so the difference is what creditgate itself costs: key lookup,
the reserve script, signing, settling. Two of them:

- plain ASGI (the default): the least a Python proxy on this stack can do per request, and
  the stricter baseline;
- ``--starlette``: a Starlette app with one catch-all route streaming the answer back, the
  pass-through proxy issue 4 measured its targets against; with ``--buffered``, the answer
  read whole and sent as one ``Response``: the pass-through issue 16 measured its targets
  against ("Starlette route, uvicorn uvloop/httptools, aiohttp, buffered answer").

Run: ``python bench/minimal_proxy.py --port P --upstream URL [--starlette [--buffered]]
[--workers N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}

Scope = dict[str, Any]


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
    )


def tune_gc() -> None:
    """The gateway's own garbage-collector tuning (``gateway.app.tune_gc``), so the comparison
    is of the work done per request, not of collector settings."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])


class MinimalProxy:
    """Forward every HTTP request to ``upstream`` and stream the answer back."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.session is not None
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in REQUEST_SKIP
        ]
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        async with self.session.request(
            scope["method"], url, headers=headers, data=bytes(body), allow_redirects=False
        ) as upstream:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status,
                    "headers": [
                        (k.lower(), v)
                        for k, v in upstream.raw_headers
                        if k.decode("latin-1").lower() not in HOP_BY_HOP
                    ],
                }
            )
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = new_session()
                tune_gc()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def starlette_app(upstream: str, buffered: bool = False) -> Any:
    """The same pass-through as a Starlette route: request body read, answer streamed (or,
    ``buffered``, read whole and sent in one piece)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    base = upstream.rstrip("/")
    state: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in REQUEST_SKIP]
        url = base + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        answer = await state["session"].request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        )
        if buffered:
            async with answer:
                content = await answer.read()
            return Response(
                content,
                status_code=answer.status,
                headers={
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
                },
            )

        async def chunks() -> Any:
            async with answer:
                async for chunk in answer.content.iter_any():
                    yield chunk

        return StreamingResponse(
            chunks(),
            status_code=answer.status,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP},
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        state["session"] = new_session()
        tune_gc()
        yield
        await state["session"].close()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def from_env() -> Any:
    """uvicorn factory for ``--workers N``: each worker reads the upstream from the environment."""
    upstream = os.environ["MINIMAL_PROXY_UPSTREAM"]
    if os.environ.get("MINIMAL_PROXY_STARLETTE"):
        return starlette_app(upstream, bool(os.environ.get("MINIMAL_PROXY_BUFFERED")))
    return MinimalProxy(upstream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--starlette", action="store_true", help="the Starlette variant")
    parser.add_argument(
        "--buffered", action="store_true", help="with --starlette: the answer read whole"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args()
    if args.workers > 1:
        os.environ["MINIMAL_PROXY_UPSTREAM"] = args.upstream
        if args.starlette:
            os.environ["MINIMAL_PROXY_STARLETTE"] = "1"
        if args.buffered:
            os.environ["MINIMAL_PROXY_BUFFERED"] = "1"
        uvicorn.run(
            "minimal_proxy:from_env",
            factory=True,
            workers=args.workers,
            app_dir=str(Path(__file__).parent),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
        )
        return
    uvicorn.run(
        starlette_app(args.upstream, args.buffered)
        if args.starlette
        else MinimalProxy(args.upstream),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
