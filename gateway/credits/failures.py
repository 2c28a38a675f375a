"""Every failure of a Redis call, whatever raised it, as the one error callers handle.

redis-py raises ``RedisError`` for what it expects, ``OSError`` can escape its sockets, and
its cluster client has raised ``AttributeError`` and ``RuntimeError`` on a connection it
closed while a call still used it (a MOVED during a reshard). For a caller they all mean the
same: the call may or may not have run, Redis could not answer it. So each call site catches
``Exception`` and raises ``unavailable(exc)``: a 503 before anything is held, a retry after.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from gateway.errors import Unavailable


def unavailable(exc: BaseException) -> Unavailable:
    """``exc`` as ``Unavailable``; its text (for the log) says whether the client itself
    failed rather than Redis."""
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, RedisError | OSError):
        text = str(exc) or type(exc).__name__  # some say nothing at all
        if "unknown command 'fcall'" in text.lower():
            text = f"this Redis has no Functions: creditgate needs Redis 7.0 or later ({text})"
        return Unavailable(f"redis: {text}")
    return Unavailable(f"redis client: {exc!r}")
