"""``Idempotency-Key`` on the admin writes: a retry within 24 h answers the first outcome.

A write sent with a key claims it in Redis (``keys.admin_answer``, one per front end and key)
before it runs, and leaves its answer there for ``KEPT_MS`` once it succeeds. A later request
with that key gets:

- the first answer again, replayed (the front end says so: ``Idempotent-Replayed: true``),
  with nothing changed: when it is the same request (method, path, body) and the first one
  succeeded;
- 409 ``conflict``: the same request while the first is still running;
- 422 ``idempotency_mismatch``: another request, whatever the first one's state.

Two retries racing on two replicas meet at the claim (SET NX): one runs, the other is told
409. Only successes are kept: a refused request (400, 404, 409) changed nothing, and a 503
left its outcome unknown; either way the claim is dropped and a retry runs the operation
again. What makes a run again safe (after a 503, a lapsed claim, a lost answer) is not the
claim but the ids derived from the key (``derived_id``): a grant or tier change carries a
request id the credit engine applies once (its per-request-id marker, also kept 24 h), and a
new account without an ``id`` gets one the store refuses a second time.

An API key's secret (``SHOWN_ONCE``) is never kept: the store holds only its hash, and Redis,
persisted to disk, holds no more. A replayed answer of ``create account`` or ``create key``
lacks ``apiKey``; its ``keyId`` says which key to revoke if the first answer was lost.

A claim lasts ``IN_FLIGHT_MS``: the attempt of a replica that died while running is retried
once it lapses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.engine import IDEMPOTENCY_RETAIN_MS
from gateway.credits.failures import unavailable
from gateway.errors import Conflict, IdempotencyMismatch, Unavailable

log = logging.getLogger("creditgate.admin")

T = TypeVar("T")

Answer = dict[str, Any]
"""What an operation answers: the API's JSON body without ``success``, the CLI's ``--json``."""

KEPT_MS = IDEMPOTENCY_RETAIN_MS
"""How long a first answer is replayed: 24 h, as long as the engine remembers a request id."""
IN_FLIGHT_MS = 60_000
"""How long a claim holds without an answer: far above any admin operation's run."""
SHOWN_ONCE = "apiKey"
"""The field of an answer never kept for a replay: a new API key's secret."""
CLAIM_TRIES = 3
"""A claim found gone between SET NX and GET (it lapsed) is claimed again, this often."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """An operation's answer, and whether it is the first answer replayed."""

    answer: Answer
    replayed: bool = False


def fingerprint(
    method: str, path: str, params: Mapping[str, object], body: Mapping[str, Any] | None
) -> str:
    """The request as its retries must repeat it: the operation (method and path as routed),
    its path values, and its body as JSON values (key order and spacing do not count).
    ``body`` None: a body that is not a JSON object (only an operation that reads no body
    can succeed with one)."""
    asked = [method, path, sorted((k, str(v)) for k, v in params.items()), body]
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def derived_id(scope: str, key: str, kind: str, length: int) -> str:
    """An id of what the request with ``key`` makes (``kind``: ``request``, ``account``): the
    same on every retry and every replica, so the engine or the store refuses a second one."""
    return hashlib.sha256(f"{kind}\n{scope}\n{key}".encode()).hexdigest()[:length]


async def run_once(
    redis: RedisClient,
    scope: str,
    key: str,
    asked: str,
    run: Callable[[], Awaitable[Answer]],
) -> Outcome:
    """``run()`` unless ``key`` has been seen in ``scope`` (the front end: each has keys of its
    own): then its first answer, or the refusal due. ``asked``: the request's ``fingerprint``,
    which a retry must repeat."""
    name = keys.admin_answer(scope, hashlib.sha256(key.encode()).hexdigest())
    claim = json.dumps({"fingerprint": asked})
    for _ in range(CLAIM_TRIES):
        if await _redis(redis.set(name, claim, px=IN_FLIGHT_MS, nx=True)):
            break
        found = await _redis(redis.get(name))
        if found is not None:
            return _replay(found, asked)
    else:
        raise Conflict("a request with this Idempotency-Key is still in flight; retry later")
    try:
        answer = await run()
    except Exception:
        await _release(redis, name)
        raise
    kept = {k: v for k, v in answer.items() if k != SHOWN_ONCE}
    first = json.dumps({"fingerprint": asked, "answer": kept})
    try:
        await _redis(redis.set(name, first, px=KEPT_MS))
    except Unavailable as exc:
        # Done is done: the caller gets its answer. A retry meets the claim until it lapses,
        # then runs again and changes nothing (the derived ids).
        log.warning("admin answer not kept for its retries: %s", exc.message)
    return Outcome(answer)


def _replay(found: bytes | str, fingerprint: str) -> Outcome:
    kept = json.loads(found)
    if kept["fingerprint"] != fingerprint:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used for another request (method, path or body); "
            "use a new key"
        )
    if "answer" not in kept:
        raise Conflict("a request with this Idempotency-Key is still in flight; retry later")
    answer: Answer = kept["answer"]
    return Outcome(answer, replayed=True)


async def _release(redis: RedisClient, name: str) -> None:
    """Drop the claim of a request that failed, so its retry runs. Best effort: a claim left
    behind lapses in ``IN_FLIGHT_MS``."""
    try:
        await _redis(redis.delete(name))
    except Unavailable as exc:
        log.warning("admin idempotency claim not released: %s", exc.message)


async def _redis(call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as exc:
        raise unavailable(exc) from exc
