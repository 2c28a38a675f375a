"""Replayed answers of ``Idempotency-Key`` requests: the first answer again, for its retries.

The first request with a key claims it (``claim``): one Redis string, in the account's slot
(``keys.AccountKeys.replay``), holding the request's ``fingerprint`` and kept
``IDEMPOTENCY_RETAIN_MS`` (24 h, as long as the engine remembers the key's request id). A
later request with that key and another fingerprint (method, path, query or body) is refused
with 422 ``idempotency_mismatch``, whatever became of the first. When the first is charged and
its answer was a JSON body of at most ``replay_max_bytes`` (``CREDITGATE_REPLAY_MAX_BYTES``),
the answer is kept under the same key before it goes out (``keep``): status, the headers the
client got, the body's bytes. A retry the engine finds charged gets that answer again
(``replay``): byte for byte, with ``X-Credits-Charged: 0`` and ``Idempotent-Replayed: true``,
neither forwarded nor charged. A first answer that was streamed (SSE, or any body that is not
JSON), larger than the limit, or not kept (Redis failed then) leaves its retries the 409
``conflict`` with ``Idempotent-Replayed: true``.

The request body counts through its SHA-256 when the gateway buffered it (a ``Content-Length``
up to ``flow.BUFFER_LIMIT``); a larger or chunked body is streamed to the backend unread, and
counts by its declared length only.

Replies are decoded text (``decode_responses``): the body is kept base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import RedisError

from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.engine import IDEMPOTENCY_RETAIN_MS
from gateway.errors import IdempotencyMismatch, Unavailable
from gateway.proxy.headers import RawHeaders

log = logging.getLogger("creditgate.proxy")

T = TypeVar("T")

KEPT_MS = IDEMPOTENCY_RETAIN_MS
MISMATCH = IdempotencyMismatch(
    "this Idempotency-Key was used for another request (method, path or body); use a new key"
)
REPLAY_HEADERS = ((b"x-credits-charged", b"0"), (b"idempotent-replayed", b"true"))
"""What a replay says of itself, in place of the first answer's charge."""


def fingerprint(method: str, path: str, query: bytes, body: bytes | None, length: str) -> str:
    """The request as its retries must repeat it. ``body`` None: streamed unread, so only its
    declared ``length`` (a ``Content-Length``, or ``chunked``) counts."""
    digest = hashlib.sha256(body).hexdigest() if body is not None else f"unread:{length}"
    asked = f"{method}\n{path}\n{query.decode('latin-1')}\n{digest}"
    return hashlib.sha256(asked.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FirstAnswer:
    """A kept answer: what the first request's client got."""

    status: int
    headers: RawHeaders
    body: bytes

    def encode(self, asked: str) -> str:
        head = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers]
        body = base64.b64encode(self.body).decode("ascii")
        answer = {"status": self.status, "headers": head, "body": body}
        return json.dumps({"fingerprint": asked, "answer": answer})

    def replayed(self) -> RawHeaders:
        """The first answer's headers, its charge replaced by the replay's marks."""
        own = {name for name, _ in REPLAY_HEADERS}
        return [(n, v) for n, v in self.headers if n not in own] + list(REPLAY_HEADERS)


def _decode(found: str) -> tuple[str, FirstAnswer | None]:
    kept = json.loads(found)
    answer = kept.get("answer")
    if answer is None:
        return kept["fingerprint"], None
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer["headers"]]
    body = base64.b64decode(answer["body"], validate=True)
    return kept["fingerprint"], FirstAnswer(int(answer["status"]), headers, body)


class Replays:
    """The claims and kept answers of one process's idempotent requests (module docstring)."""

    def __init__(self, redis: RedisClient, *, max_bytes: int) -> None:
        self.redis = redis
        self.max_bytes = max_bytes

    async def claim(self, account: str, base_id: str, asked: str) -> None:
        """Record ``asked`` for the key (its request id ``base_id``) unless a request claimed it
        before; then raise ``IdempotencyMismatch`` if that one was another request."""
        name = keys.account_keys(account).replay(base_id)
        for _ in range(3):
            claimed = {"fingerprint": asked}
            if await _redis(self.redis.set(name, json.dumps(claimed), px=KEPT_MS, nx=True)):
                return
            found = await _redis(self.redis.get(name))
            if found is not None:  # else it lapsed in between: claim it again
                if _fingerprint(found) != asked:
                    raise MISMATCH
                return

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes

    async def keep(self, account: str, base_id: str, asked: str, answer: FirstAnswer) -> None:
        """Keep ``answer`` for the key's retries. Best effort: if Redis fails, the retries get
        the 409 they got before answers were kept."""
        name = keys.account_keys(account).replay(base_id)
        try:
            await _redis(self.redis.set(name, answer.encode(asked), px=KEPT_MS))
        except Unavailable as exc:
            log.warning("answer not kept for its retries: %s", exc.message)

    async def first_answer(self, account: str, base_id: str) -> FirstAnswer | None:
        """The kept answer of the key, None when none was kept. A Redis failure here is None
        too: the retry gets the 409 rather than a 503 for a request that succeeded."""
        try:
            found = await _redis(self.redis.get(keys.account_keys(account).replay(base_id)))
        except Unavailable as exc:
            log.warning("kept answer unreadable: %s", exc.message)
            return None
        if found is None:
            return None
        try:
            return _decode(str(found))[1]
        except (ValueError, KeyError, TypeError, binascii.Error):
            log.error("kept answer of %s is damaged; answering 409", base_id)
            return None


def _fingerprint(found: bytes | str) -> str | None:
    try:
        asked = json.loads(found).get("fingerprint")
    except (ValueError, AttributeError):
        return None
    return asked if isinstance(asked, str) else None


async def _redis(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise Unavailable(f"redis: {exc}") from exc
