"""The baseline for the proxy benchmark: a pass-through proxy with no auth and no credits.

Same stack as the gateway (uvicorn, a plain ASGI app, one pooled ``aiohttp.ClientSession``),
so the difference between the two is what creditgate itself costs: key lookup, the reserve
script, signing, settling. Run: ``python bench/minimal_proxy.py --port P --upstream URL``.
"""

from __future__ import annotations

import argparse
import gc
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
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30),
                    auto_decompress=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
                # The gateway's own garbage-collector tuning (``gateway.app.tune_gc``), so the
                # comparison is of the work done per request, not of collector settings.
                gc.collect()
                gc.freeze()
                gc.set_threshold(50_000, *gc.get_threshold()[1:])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        MinimalProxy(args.upstream),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
