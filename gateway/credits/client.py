"""Connects to Redis: a URL, a Redis Cluster, or an embedded in-process fakeredis for dev.

``RedisClient`` is what the rest of creditgate may ask of that connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, Literal, Protocol, Self

from redis.typing import EncodableT, FieldT, KeyT, StreamIdT, ZSetRangeResponse

from gateway.settings import Settings

log = logging.getLogger("creditgate.redis")

POOL_SIZE = 1024
"""Connections per process (per node on a cluster) at most; past it a command fails (answered
503), never hangs."""


ScriptArg = str | int
"""A script argument (ARGV): text, or an integer (credits, tokens, ms)."""

StreamFields = dict[FieldT, EncodableT]
"""A stream entry's fields as redis-py's ``xadd`` hints them: a ``dict[str, str]`` is one at
run time, but not to mypy (a dict's key type is invariant)."""


class RedisPipeline(Protocol):
    """Commands queued on a non-transactional pipeline; ``execute`` sends them in one round
    trip (one per node in a cluster) and returns their replies in order.

    A queued command's own return value is never used (``object``): its reply comes from
    ``execute``, as an exception in its place when ``raise_on_error`` is false.
    """

    async def __aenter__(self) -> Self: ...

    # ``None``s as redis-py's ``ClusterPipeline`` annotates them (the plain pipeline takes
    # anything); ``async with`` type-checks all the same, exiting on an exception included.
    async def __aexit__(self, exc_type: None, exc_value: None, traceback: None) -> None: ...

    def execute(self, raise_on_error: bool = True) -> Awaitable[list[Any]]: ...

    def fcall(self, function: str, numkeys: int, *keys_and_args: ScriptArg) -> object: ...
    def incr(self, name: str) -> object: ...
    def publish(self, channel: str, message: str) -> object: ...
    def hexists(self, name: str, key: str) -> object: ...
    def hmget(self, name: str, keys: list[str]) -> object: ...
    def hincrby(self, name: str, key: str, amount: int) -> object: ...
    def hset(self, name: str, *, mapping: Mapping[FieldT, EncodableT]) -> object: ...
    def xlen(self, name: str) -> object: ...
    def xrange(self, name: str, *, count: int) -> object: ...
    def xdel(self, name: str, *ids: str) -> object: ...
    def xack(self, name: str, groupname: str, *ids: str) -> object: ...
    def xgroup_create(self, name: str, groupname: str, *, id: str, mkstream: bool) -> object: ...
    def xgroup_delconsumer(self, name: str, groupname: str, consumername: str) -> object: ...
    def xinfo_consumers(self, name: str, groupname: str) -> object: ...
    def xreadgroup(
        self,
        groupname: str,
        consumername: str,
        streams: dict[KeyT, StreamIdT],
        *,
        count: int,
    ) -> object: ...
    def xautoclaim(
        self,
        name: str,
        groupname: str,
        consumername: str,
        min_idle_time: int,
        start_id: str,
        *,
        count: int,
    ) -> object: ...


class RedisClient(Protocol):
    """The Redis commands creditgate calls, and nothing more: so that strict mypy sees the
    Redis boundary instead of ``Any``.

    Three clients stand behind it: ``redis.asyncio.Redis``, ``redis.asyncio.cluster.RedisCluster``
    and the embedded ``fakeredis.FakeAsyncRedis``. ``connect`` returns each of them as one, with
    no cast, so mypy checks that each has every command here and its pipeline's too.
    Where redis-py's plain and cluster clients differ, this declares what both accept:
    ``aclose()`` without arguments, and ``pipeline`` with ``transaction`` always given (their
    defaults differ) and always false (atomicity lives in the Lua scripts, never in MULTI).

    Replies are decoded (``decode_responses=True`` in ``connect``): ``str`` at run time. Where
    redis-py's own hints say ``bytes | str`` regardless of that option, so does this, since
    a narrower reply type would not be satisfied by the real clients without a cast, and a
    cast would hide every other mismatch too. The replies of ``execute`` and of scripts are
    redis-py's ``Any``; their parsers give them types.
    """

    def get(self, name: str) -> Awaitable[bytes | str | None]: ...
    def set(
        self, name: str, value: str, *, px: int, nx: bool = False
    ) -> Awaitable[bool | str | bytes | None]: ...
    def delete(self, *names: str) -> Awaitable[int]: ...
    def incr(self, name: str) -> Awaitable[int]: ...
    def publish(self, channel: str, message: str) -> Awaitable[int]: ...
    def time(self) -> Awaitable[tuple[int, int]]: ...
    def ping(self) -> Awaitable[bool]: ...
    def hgetall(self, name: str) -> Awaitable[dict[bytes | str, bytes | str]]: ...
    def hdel(self, name: str, *keys: str) -> Awaitable[int]: ...
    def xadd(self, name: str, fields: StreamFields) -> Awaitable[object]: ...
    def zrangebyscore(
        self, name: str, min: float | str, max: float | str, *, start: int, num: int
    ) -> Awaitable[ZSetRangeResponse]: ...
    def scan_iter(self, *, match: str, count: int) -> AsyncIterator[str]: ...
    def fcall(self, function: str, numkeys: int, *keys_and_args: ScriptArg) -> Awaitable[Any]: ...
    def function_load(self, code: str, replace: bool | None = False) -> Awaitable[bytes | str]: ...
    def pipeline(self, *, transaction: Literal[False]) -> RedisPipeline: ...
    def aclose(self) -> Awaitable[None]: ...


def is_plain_redis(client: RedisClient) -> bool:
    """Whether ``client`` is redis-py's client of one Redis (fakeredis's is one too), not a
    cluster's."""
    from redis.asyncio import Redis

    return isinstance(client, Redis)


def connect(settings: Settings) -> RedisClient:
    """A redis-py asyncio client (decoded responses) for the configured Redis.

    With ``CREDITGATE_REDIS_URL=embedded`` this is an in-process fakeredis running the same Lua
    scripts: state lives in this one process only, so it is for ``creditgate demo`` and
    single-process development, never for replicas or production. Unset, it is refused
    (``ConfigError``): a missing variable must not turn into a private Redis beside a real store.
    """
    settings.require_redis("connecting to Redis")
    assert settings.redis_url is not None
    if settings.embedded_redis:
        import fakeredis

        log.warning(
            "CREDITGATE_REDIS_URL=embedded: using an EMBEDDED in-process Redis (fakeredis). "
            "Balances live in this process only: dev and demo use, never production."
        )
        return fakeredis.FakeAsyncRedis(decode_responses=True)
    if settings.redis_cluster:
        return cluster_client(settings.redis_urls)
    from redis.asyncio import ConnectionPool, Redis

    # The credit engine pipelines the calls of one loop turn, so few connections are busy at
    # once; the cap is far above redis-py's default 100, which a burst of single calls (key
    # lookups, admin, health) could reach. A plain pool: the blocking one's checkout costs
    # about a third of the throughput (measured: 5,300 against 8,300 EVALSHA/s).
    pool = ConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=POOL_SIZE,
    )
    return Redis.from_pool(pool)


CLUSTER_SOCKET_TIMEOUT_S = 5.0
"""A cluster node that stops answering fails a call after this long (answered 503), rather
than holding it until the kernel gives up on the connection."""


def cluster_client(urls: list[str]) -> RedisClient:
    """A cluster client that knows every seed node: it starts, and finds the slots again
    after a failover, while any one of them answers. Credentials and TLS come from the first
    URL (a cluster has one set for all its nodes)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.connection import SSLConnection, parse_url

    options: dict[str, Any] = {}
    seeds = []
    for url in urls:
        parsed: dict[str, Any] = dict(parse_url(url))
        seeds.append(ClusterNode(parsed.pop("host", "127.0.0.1"), int(parsed.pop("port", 6379))))
        parsed.pop("db", None)  # a cluster has database 0 only
        options = options or parsed
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    options.setdefault("socket_timeout", CLUSTER_SOCKET_TIMEOUT_S)
    options.setdefault("socket_connect_timeout", CLUSTER_SOCKET_TIMEOUT_S)
    # Per node; redis-py's default of 100 refuses a burst at once (MaxConnectionsError, no wait).
    options.setdefault("max_connections", POOL_SIZE)
    cluster = RedisCluster(startup_nodes=seeds, decode_responses=True, **options)
    cluster.commands_parser = _function_keys_parser()
    return cluster


def _function_keys_parser() -> Any:
    """redis-py's parser of a command's keys, reading an ``FCALL``'s from the call itself.

    redis-py routes a cluster's command by its keys. It reads ``EVALSHA``'s from the call, but
    asks a node for any other command whose keys move (``COMMAND GETKEYS``): a round trip more
    for every script call. An ``FCALL`` names its keys as ``EVALSHA`` does.
    """
    from redis._parsers import AsyncCommandsParser

    class FunctionKeys(AsyncCommandsParser):
        async def get_keys(self, *args: Any) -> tuple[str, ...] | None:
            if len(args) >= 3 and str(args[0]).upper() in ("FCALL", "FCALL_RO"):
                return tuple(args[3 : 3 + int(args[2])]) or None
            return await super().get_keys(*args)

    return FunctionKeys()
