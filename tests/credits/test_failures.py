"""Whatever a Redis client raises is ``Unavailable`` at every Redis call site.

redis-py's cluster client raised ``AttributeError`` (``'NoneType' object has no attribute
'writelines'``) and ``RuntimeError`` (a closed transport) on a connection it had closed while
a call still used it, during a reshard. Those are not ``RedisError``: they escaped the call
sites' mapping as 500s, a crashed sync pass, a dead revocation. Here a client that fails so
on every command stands behind each call site.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import MaxConnectionsError, ResponseError

from gateway.accounts.keycache import KeyCache, announce_key_change
from gateway.admin.idempotency import run_once
from gateway.credits.client import RedisClient
from gateway.credits.engine import CreditEngine
from gateway.credits.failures import unavailable
from gateway.errors import Unavailable
from gateway.settings import DEFAULT_TIERS
from sync.outbox import OutboxEntry, OutboxReader

FAILURES = [
    AttributeError("'NoneType' object has no attribute 'writelines'"),
    RuntimeError("unable to perform operation on <TCPTransport closed=True>"),
    OSError("connection reset"),
]


class Broken:
    """Every command, pipeline and script of this client fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def fail(*args: object, **kwargs: object) -> Any:
            raise self.error

        if name == "pipeline":
            return lambda **_: Broken(self.error)
        return fail


class BrokenPipeline(Broken):
    """A pipeline: queuing works, ``execute`` fails."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name == "execute":
            return super().__getattr__(name)
        return lambda *args, **kwargs: None


def client(error: Exception) -> RedisClient:
    broken = Broken(error)
    broken.pipeline = lambda **_: BrokenPipeline(error)  # type: ignore[method-assign]
    return broken  # type: ignore[return-value]


async def answer() -> dict[str, Any]:
    return {"ok": True}


CALLS: dict[str, Callable[[RedisClient], Awaitable[object]]] = {
    "engine script": lambda r: CreditEngine(r, DEFAULT_TIERS).status("acct_1"),
    "engine clock": lambda r: CreditEngine(r, DEFAULT_TIERS).now_ms(),
    "reaper's index": lambda r: CreditEngine(r, DEFAULT_TIERS).overdue(0),
    "revocation": lambda r: announce_key_change(r, "hash"),
    "admin idempotency": lambda r: run_once(r, "admin", "key", "fp", answer),
    "outbox read": lambda r: OutboxReader(r, "c1").read(10),
    "outbox ack": lambda r: OutboxReader(r, "c1").ack([OutboxEntry(0, "1-0", None)]),
    "outbox lag": lambda r: OutboxReader(r, "c1").lag_ms(),
    "outbox reject": lambda r: OutboxReader(r, "c1").reject(OutboxEntry(0, "1-0", None), "x"),
}


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("call", CALLS.values(), ids=list(CALLS))
async def test_any_client_failure_is_unavailable(
    call: Callable[[RedisClient], Awaitable[object]], error: Exception
) -> None:
    with pytest.raises(Unavailable):
        await call(client(error))


async def test_the_key_cache_drops_itself_when_the_version_cannot_be_read() -> None:
    async def lookup(key_hash: str) -> None:
        return None

    cache = KeyCache(client(FAILURES[0]), lookup)
    await cache.check_version()  # logged and dropped, not raised


def test_unavailable_says_whether_the_client_failed() -> None:
    assert unavailable(OSError("reset")).message == "redis: reset"
    assert unavailable(RuntimeError("closed")).message == "redis client: RuntimeError('closed')"
    same = Unavailable("x")
    assert unavailable(same) is same


def test_an_error_without_words_is_named_by_its_class() -> None:
    """redis-py's cluster client raised ``MaxConnectionsError()`` under load: the log said
    only "reserve failed: redis: "."""
    assert unavailable(MaxConnectionsError()).message == "redis: MaxConnectionsError"


def test_a_redis_without_functions_is_named() -> None:
    # Redis 6 answers an FCALL as an unknown command: the log says what to do about it.
    error = ResponseError("unknown command 'FCALL', with args beginning with: 'creditgate_'")
    assert "creditgate needs Redis 7.0 or later" in str(unavailable(error))
    assert str(unavailable(ResponseError("WRONGTYPE x"))) == "redis: WRONGTYPE x"
