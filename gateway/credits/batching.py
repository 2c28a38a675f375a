"""Automatic pipelining of script calls: the calls issued in one event-loop turn go to Redis
as one pipeline (one write, one round trip) instead of one round trip each.

Each call still runs as its own script, in the order the calls were made, and is answered as
if alone, so batching changes no answer. The calls of one pipeline go as one ``FCALL`` of the
library's batch function (``batch.lua``), which runs them one after the other: Redis's own
work for each ``FCALL`` and the clock each script read were about a tenth of a charged
request's cost in Redis (issue 16, callgrind). A call whose script fails fails alone; the
others are answered as in a pipeline. It pays off under concurrency, where
per-command work dominates: measured here through redis-py, about 8,000 EVALSHA/s one by one
from 50 tasks against about 20,000/s pipelined. A call made while no batch is in flight (one
request at a time) has nothing to join: it is written at once, in its caller's own step, and
the calls made while it is in flight wait for the end of their loop turn and go together. A
function Redis does not have (a restart, a new node) is loaded, and the call retried alone.

A *deferred* call (the proxy's settle, which nobody waits for) waits up to ``DEFER_S`` for
company: it goes with the next urgent call's batch (a reserve), else on its own. At low
concurrency that saves a whole round trip per request, on both sides of the socket. It waits
on an idle wire too: sent at once there, the settle left the next reserve's round trip
(80 to 100 µs less in Redis at one connection) but the gateway paid as much for the write and
the reply of its own, and the latency at one connection did not move (``bench/proxy.py`` on
the 2-core VM). Under load the settles ride with the reserves: sent in batches of their own
(when a reply came back, or on their own timer), two workers did 0.73 of the pass-through's
throughput where they do 0.78, the extra round trips leaving the cores idler. Holding a
worker to one batch in flight changed nothing.

With a ``Wire`` (a plain Redis) the pipeline is written by hand on the batcher's own
connection (``gateway.credits.wire``), its replies handed over from the connection's own
callback (no loop turn between a reply and its caller's wake-up); otherwise it is a redis-py
pipeline.

One call can never harm another: an argument Redis cannot take (not str, bytes or int, or a
string that is not valid UTF-8, such as a lone surrogate) fails its own call with ``DataError``
before anything is sent, and every future of a batch is resolved whatever happens to the
batch (a client error of any kind becomes a redis ``ConnectionError`` of every call in it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError

from gateway.credits.client import RedisClient, ScriptArg
from gateway.credits.scripts import Script, is_missing
from gateway.credits.wire import Reply, Wire, pack_fcall

MAX_BATCH = 512
"""Calls per pipeline at most; a larger turn's calls go in several pipelines."""
DEFER_S = 0.002
"""The longest a deferred call waits for an urgent one to share its round trip."""
MOST_PARTS = 79
"""A batched call's keys, and its arguments, at most: the batch's head writes each count as
the character 48 + n, which stays ASCII (``batch.lua``)."""

Call = tuple[Script, Sequence[str], Sequence[ScriptArg], "asyncio.Future[Any]"]
"""A script, its keys, its arguments and the future of its reply."""


class ScriptBatcher:
    """Collects script calls made in the same loop turn and sends them as one pipeline."""

    def __init__(self, redis: RedisClient, wire: Wire | None = None) -> None:
        self.redis = redis
        self.wire = wire
        self._pending: list[Call] = []
        self._flush: asyncio.Handle | None = None
        self._flush_deferred = False
        self._in_flight = 0
        """Batches written whose replies have not all come back (or failed)."""
        self._tasks: set[asyncio.Task[None]] = set()

    def call(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        defer: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue one call of a script; the future holds its reply or error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.wire is None:  # the Wire checks while packing; redis-py only at execute
            try:
                _check_arguments(keys, args)
            except DataError as exc:
                future.set_exception(exc)
                return future
        self._pending.append((script, keys, args, future))
        if not defer and not self._in_flight and (self._flush is None or self._flush_deferred):
            # Nothing on the wire: no batch of this turn to join, so no turn to wait for. The
            # deferred calls waiting go with it; the calls after it in this turn, behind it.
            if self._flush is not None:
                self._flush.cancel()
            self._send_pending()
        elif self._flush is None:
            self._flush_deferred = defer
            if defer:
                self._flush = loop.call_later(DEFER_S, self._send_pending)
            else:
                self._flush = loop.call_soon(self._send_pending)
        elif self._flush_deferred and not defer:
            self._flush.cancel()
            self._flush_deferred = False
            self._flush = loop.call_soon(self._send_pending)
        return future

    def _send_pending(self) -> None:
        self._flush = None
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            if self.wire is not None:
                chunk, packed = _packed(chunk)
                if not chunk:
                    continue
                self._in_flight += 1
                # Connected: no task needed, the replies call back.
                if not self.wire.send_now(packed, functools.partial(self._replied, chunk)):
                    self._spawn(self._send_connecting(chunk, packed))
            else:
                self._in_flight += 1
                self._spawn(self._send_pipeline(chunk))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_connecting(self, chunk: list[Call], packed: list[bytes]) -> None:
        assert self.wire is not None
        await self._send(chunk, self.wire.execute(packed))

    async def _send_pipeline(self, chunk: list[Call]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        merged = _merged(chunk)
        calls = [merged] if merged else [(s.function, keys, args) for s, keys, args, _ in chunk]
        for function, keys, args in calls:
            pipe.fcall(function, len(keys), *keys, *args)
        await self._send(chunk, pipe.execute(raise_on_error=False))

    async def _send(self, chunk: list[Call], replies: Awaitable[list[Reply]]) -> None:
        """Await a batch's replies and deliver them; on any failure, fail every call of it
        (a cancellation too, which then goes on)."""
        try:
            delivered = await replies
        except BaseException as exc:
            self._in_flight -= 1
            _fail(chunk, _as_redis_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        self._in_flight -= 1
        self._deliver(chunk, delivered)

    def _replied(self, chunk: list[Call], outcome: list[Reply] | Exception) -> None:
        self._in_flight -= 1
        if isinstance(outcome, Exception):
            _fail(chunk, outcome)
        else:
            self._deliver(chunk, outcome)

    def _deliver(self, chunk: list[Call], replies: list[Reply]) -> None:
        if len(chunk) > 1 and len(replies) == 1:  # sent as one call of the batch function
            replies = _split(replies[0], len(chunk))
        lost: list[Call] = []
        for call, reply in zip(chunk, replies, strict=True):
            if is_missing(reply):
                lost.append(call)
            elif isinstance(reply, BaseException):
                _resolve(call[3], error=reply)
            else:
                _resolve(call[3], result=reply)
        if lost:
            self._spawn(self._retry(lost))

    async def _retry(self, lost: list[Call]) -> None:
        """Calls whose function Redis did not have, one by one in their order: the first loads
        the library."""
        for script, keys, args, future in lost:
            try:
                reply = await script(keys=keys, args=args)
            except BaseException as exc:
                _resolve(future, error=_as_redis_error(exc))
                if not isinstance(exc, Exception):
                    raise
            else:
                _resolve(future, result=reply)


def _merged(chunk: Sequence[Call]) -> tuple[str, Sequence[str], Sequence[ScriptArg]] | None:
    """The one call of the batch function (``batch.lua``) that runs ``chunk``'s calls, or None
    when they go as they are: a lone call, or one of a script that is never batched."""
    if len(chunk) < 2:
        return None
    batch = chunk[0][0].batch
    head: list[str] = []
    keys: list[str] = []
    args: list[ScriptArg] = [""]
    for script, call_keys, call_args, _ in chunk:
        if not script.number or script.batch != batch:
            return None
        if max(len(call_keys), len(call_args)) > MOST_PARTS:
            return None
        head.append(chr(48 + script.number) + chr(48 + len(call_keys)) + chr(48 + len(call_args)))
        keys += call_keys
        args += call_args
    args[0] = "".join(head)
    return batch, keys, args


def _split(reply: Reply, calls: int) -> list[Reply]:
    """The batch function's reply, as each call's: an error of the whole call (Redis does not
    have the function, a full memory) is every call's."""
    if isinstance(reply, list) and len(reply) == calls:
        return reply
    if isinstance(reply, BaseException):
        return [reply] * calls
    error = RedisConnectionError(f"the batch function answered {calls} calls with {reply!r}")
    return [error] * calls


def _packed(chunk: list[Call]) -> tuple[list[Call], list[bytes]]:
    """The calls that could be written, and their bytes: one call of the batch function for
    them all where they can go so. A call with an argument Redis cannot take fails alone, as
    redis-py's ``DataError`` would: the rest of the batch goes on."""
    merged = _merged(chunk)
    if merged is not None:
        try:
            return chunk, [pack_fcall(*merged)]
        except (TypeError, ValueError):
            pass  # a call's argument: found below, where it fails alone
    kept: list[Call] = []
    packed: list[bytes] = []
    for call in chunk:
        script, keys, args, future = call
        try:
            packed.append(pack_fcall(script.function, keys, args))
        except (TypeError, ValueError) as exc:  # ValueError: a str that is not UTF-8
            _resolve(future, error=DataError(str(exc)))
            continue
        kept.append(call)
    merged = _merged(kept)
    if merged is not None:
        packed = [pack_fcall(*merged)]
    return kept, packed


def _check_arguments(keys: Sequence[str], args: Sequence[ScriptArg]) -> None:
    """``DataError`` for an argument Redis cannot take, as the Wire's ``pack`` would say."""
    for arg in (*keys, *args):
        if isinstance(arg, str):
            try:
                arg.encode()
            except UnicodeEncodeError as exc:
                raise DataError(f"a Redis argument must be valid UTF-8: {exc.reason}") from exc
        elif isinstance(arg, bool) or not isinstance(arg, int | bytes):
            raise DataError(f"a Redis argument must be str, bytes or int, not {type(arg)!r}")


def _as_redis_error(exc: BaseException) -> RedisError:
    """What every call of a failed batch gets: Redis errors as they are; anything else (a
    client's own bug, a cancellation) as a ConnectionError, which the engine answers 503."""
    if isinstance(exc, RedisError):
        return exc
    if isinstance(exc, OSError | asyncio.CancelledError):
        return RedisConnectionError(f"the batch failed: {exc!r}")
    return RedisConnectionError(f"the Redis client failed: {exc!r}")


def _fail(chunk: list[Call], error: BaseException) -> None:
    for *_, future in chunk:
        _resolve(future, error=error)


def _resolve(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled; the script ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
