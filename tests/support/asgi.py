"""A request's ASGI scope as a server gives it, for tests that call an app's ASGI callable
with nothing between (an HTTP client in the same process would bring work and objects of its
own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote


def http_scope(
    method: str,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The scope of ``method target`` (a raw request target, its query after ``?``), with a
    ``Host`` header and ``headers``; ``extra`` adds or replaces keys (``extensions``...)."""
    raw_path, _, query = target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"gw"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        **extra,
    }


def empty_body_then_gone(gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive``: the request's empty body, then (once ``gone`` is set) the client's
    disconnect."""
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive
