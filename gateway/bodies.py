"""Reading a small JSON API's request body without trusting its size: the admin API's and the
account holder's ``/api/user/keys``. The proxy streams its bodies and reads them elsewhere."""

from __future__ import annotations

from starlette.requests import Request

from gateway.errors import PayloadTooLarge

BODY_LIMIT = 65_536
"""The largest body read (an account, a key, a grant: well under 1 KiB). Past it the answer is
413 at once and the rest is never read: a huge body cannot grow memory."""


async def read_body(request: Request, limit: int = BODY_LIMIT) -> bytes:
    """The request body, read up to ``limit`` bytes: ``PayloadTooLarge`` as soon as a
    ``Content-Length`` or the bytes received pass it (whatever the framing)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is over {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
