"""Bytes in and out of the ASGI server for the proxy: request bodies, JSON answers, disconnects.

Kept apart from the proxy's decisions so those read as steps; everything here is plain ASGI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.errors import CreditgateError, answer, openai_error_body
from gateway.settings import ErrorStyle

CLIENT_GONE = "creditgate.client_gone"
"""The ``scope["extensions"]`` entry of creditgate's own server protocol (``gateway.heads``):
``{"future": f}``, ``f`` done once the client's connection is lost before its answer was
complete. The proxy learns of a disconnect from it without a task waiting on ``receive`` for
every request; under another ASGI server, that task it is (``wait_disconnect``)."""


class ClientGone(Exception):
    """The client disconnected while its request body was being read."""


async def send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra: Sequence[tuple[bytes, bytes]] = (),
    *,
    style: ErrorStyle = "creditgate",
) -> None:
    """``body`` as a whole JSON answer; an error body (``errors.error_body``) in the shape of
    ``style``, the route's ``errors`` setting (``errors.openai_error_body``)."""
    if style == "openai":
        body = openai_error_body(status, body)
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def splice_credit_info(body: bytes, info: dict[str, int]) -> bytes:
    """The JSON object ``body`` with ``creditInfo`` added, the backend's bytes kept as they are."""
    end = body.rstrip()
    inner = end[:-1].rstrip()
    sep = b"" if inner.endswith(b"{") else b","
    fields = ",".join(f'"{name}":{value:d}' for name, value in info.items())
    return inner + sep + b'"creditInfo":{' + fields.encode() + b"}}"


def is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def send_error(
    send: Send,
    error: CreditgateError,
    extra: Sequence[tuple[bytes, bytes]] = (),
    *,
    style: ErrorStyle = "creditgate",
) -> None:
    """The answer ``gateway.errors.answer`` gives to ``error``, sent as plain ASGI."""
    reply = answer(error)
    headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    await send_json(send, reply.status, reply.body, [*extra, *headers], style=style)


def has_chunked_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" and value.lower() != b"identity":
            return True
    return False


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def stream_body(receive: Receive, read: asyncio.Event) -> AsyncIterator[bytes]:
    """The request body as it arrives; ``read`` is set once all of it was received."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            read.set()
            return


def client_gone(scope: Scope) -> asyncio.Future[None] | None:
    """The server's ``CLIENT_GONE`` future of this request, if the server gives one."""
    extensions = scope.get("extensions")
    if extensions is None or CLIENT_GONE not in extensions:
        return None
    gone: asyncio.Future[None] = extensions[CLIENT_GONE]["future"]
    return gone


async def wait_disconnect_after(read: asyncio.Event, receive: Receive) -> None:
    """``wait_disconnect`` for a streamed body: only once the body is read, so the two never
    call ``receive`` at the same time."""
    await read.wait()
    await wait_disconnect(receive)


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (or, under uvicorn, once the response is complete)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
