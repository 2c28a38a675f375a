"""API key authentication with an in-process cache, and key changes across replicas.

The hot path never goes to SQL for a key it has seen: ``KeyCache`` maps the key's SHA-256 to
(account, key id, revoked, its own limits), positive and negative answers alike, bounded in
size. A change of a key in the store (a revocation, new limits) is announced in Redis
(``announce_key_change``): it bumps ``keys.KEYS_VERSION`` and publishes the hash on
``keys.KEYS_CHANNEL``. Every replica's ``KeyCache`` polls the version every ``poll_interval``
(250 ms) and drops its whole cache when it moved, so a revoked key stops working, and a
changed limit applies, everywhere within 1 s. The announcement is two plain commands, not a
pipeline (a Redis Cluster refuses PUBLISH in one). If Redis cannot be read the cache is
dropped too (fail closed: keys are looked up in the store again), and every entry is looked up
again after ``entry_ttl`` (60 s) whatever happens, so even an announcement that never arrived
(Redis lost the version) bounds how long a revoked key works.

A key past its own expiry is refused here (``KeyExpired``, by this host's clock) for every
endpoint; for proxied calls the reserve script checks it again by Redis's clock.

``last_used_at`` is batched: the cache notes when each key was last used (the time of the use,
not of the write) and ``flush_touched`` writes them to the store off the hot path, about every
5 s; the store never sets it later than the key's revocation. Both go to the store through
``store.direct`` where the database URL allows, so that a proxying worker never loads
SQLAlchemy (issue 16); else through the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.accounts.apikeys import hash_key, well_formed
from gateway.accounts.stored import in_store, in_thread, orm_loaded
from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.credits.failures import unavailable
from gateway.credits.scopes import KeyRules
from gateway.errors import InvalidRequest, KeyExpired, Unauthorized
from gateway.services import Services
from store.records import ApiKeyRecord
from store.timefmt import to_datetime, to_ms

log = logging.getLogger("creditgate.auth")

POLL_INTERVAL = 0.25
ENTRY_TTL = 60.0
CACHE_LIMIT = 50_000
STOP_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What the store knows of a key hash; ``revoked`` keys are cached as refusals too."""

    account_id: str
    key_id: str
    revoked: bool
    rules: KeyRules | None = None
    """The key's own limits; None: none (``KeyRules(key_id)``)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request's account and key (never the key itself)."""

    account_id: str
    key_id: str
    rules: KeyRules | None = None
    """The key's own limits, for the reserve script; None: the key has none."""


KeyLookup = Callable[[str], Awaitable[KeyEntry | None]]
"""Find a key by hash in the store; raises Unavailable when it cannot answer."""

Toucher = Callable[[dict[str, datetime]], Awaitable[None]]
"""Record when these key ids were last used (``last_used_at``)."""


async def announce_key_change(redis: RedisClient, key_hash: str) -> None:
    """Tell every replica that the key ``key_hash`` changed in the store (revoked, or its
    limits): call after the commit. Every cache drops what it holds and reads again."""
    try:
        await redis.incr(keys.KEYS_VERSION)
        await redis.publish(keys.KEYS_CHANNEL, key_hash)
    except Exception as exc:
        raise unavailable(exc) from exc


def authorization_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's ``Authorization`` header (raw ASGI headers), None if absent.

    Every authenticated endpoint (proxy, user, admin) reads it here. More than one is
    ``InvalidRequest`` (400): the gateway and a backend or cache in between could each pick
    a different one (the first or the last), so none is trusted.
    """
    found: str | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise InvalidRequest("the request has more than one Authorization header")
            found = value.decode("latin-1")
    return found


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, None if absent or malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value if well_formed(value) else None


class KeyCache:
    """Authenticate API keys from memory; watch Redis for revocations (``start``/``stop``)."""

    def __init__(
        self,
        redis: RedisClient,
        lookup: KeyLookup,
        *,
        touch: Toucher | None = None,
        poll_interval: float = POLL_INTERVAL,
        limit: int = CACHE_LIMIT,
        entry_ttl: float = ENTRY_TTL,
    ) -> None:
        self._redis = redis
        self._lookup = lookup
        self._touch = touch
        self._poll_interval = poll_interval
        self._limit = limit
        self._entry_ttl = entry_ttl
        self._entries: dict[str, tuple[KeyEntry | None, float]] = {}
        """Key hash -> what the store said, and the monotonic time it is good until."""
        self._touched: dict[str, float] = {}
        """Key id -> the epoch seconds of its latest use since the last flush."""
        self._pending: dict[str, asyncio.Future[KeyEntry | None]] = {}
        self._generation = 0
        self._stopping = False
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller of a request, or Unauthorized; Unavailable if the store is down."""
        secret = bearer_key(authorization)
        if secret is None:
            raise Unauthorized("missing or malformed API key: use Authorization: Bearer cg_...")
        key_hash = hash_key(secret)
        cached = self._entries.get(key_hash)
        if cached is not None and cached[1] > time.monotonic():
            entry = cached[0]
        else:
            entry = await self._look_up_once(key_hash)
        if entry is None or entry.revoked:
            raise Unauthorized("unknown or revoked API key")
        expires = None if entry.rules is None else entry.rules.expires_at_ms
        if expires is not None and time.time() * 1000 >= expires:
            when = to_datetime(expires).isoformat(timespec="seconds").replace("+00:00", "Z")
            raise KeyExpired(f"API key {entry.key_id} expired at {when}")
        self._touched[entry.key_id] = time.time()
        return Caller(entry.account_id, entry.key_id, entry.rules)

    async def _look_up_once(self, key_hash: str) -> KeyEntry | None:
        """One store lookup per hash however many requests miss at once (a cold replica under
        load would otherwise send each of them to SQL). An answer that raced a revocation is
        used for its own requests but not cached."""
        pending = self._pending.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key_hash))
            self._pending[key_hash] = pending
            generation = self._generation
            pending.add_done_callback(lambda done: self._settled(key_hash, done, generation))
        return await asyncio.shield(pending)

    def _settled(
        self, key_hash: str, done: asyncio.Future[KeyEntry | None], generation: int
    ) -> None:
        self._pending.pop(key_hash, None)
        if not done.cancelled() and done.exception() is None and generation == self._generation:
            self._remember(key_hash, done.result())

    def _remember(self, key_hash: str, entry: KeyEntry | None) -> None:
        if len(self._entries) >= self._limit:
            # Dicts keep insertion order: drop the oldest tenth rather than everything.
            for old in list(self._entries)[: self._limit // 10 or 1]:
                del self._entries[old]
        self._entries.pop(key_hash, None)  # a refreshed entry goes to the end
        self._entries[key_hash] = (entry, time.monotonic() + self._entry_ttl)

    def forget_all(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def check_version(self) -> None:
        """Drop the cache if a revocation was announced (or Redis cannot say)."""
        try:
            version = await self._redis.get(keys.KEYS_VERSION)
        except Exception as exc:
            log.warning("cannot read the key version, dropping the key cache: %s", exc)
            self.forget_all()
            self._version = None
            return
        version = str(version or "0")
        if version != self._version:
            if self._version is not None:
                log.info("an API key changed somewhere: key cache dropped")
            self.forget_all()
            self._version = version

    async def flush_touched(self) -> None:
        """Write the batched ``last_used_at`` updates; a failure only loses the timestamps."""
        if not self._touched or self._touch is None:
            return
        batch = {key: datetime.fromtimestamp(at, UTC) for key, at in self._touched.items()}
        self._touched = {}
        try:
            await self._touch(batch)
        except Exception as exc:  # a lost timestamp must never disturb the watcher
            log.warning("could not record key use: %s", exc)

    async def start(self) -> None:
        await self.check_version()
        self._task = asyncio.create_task(self._watch(), name="creditgate-key-watch")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: shutdown must not hang on a watcher stuck in a Redis client.
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
            self._task = None
        await self.flush_touched()

    async def _watch(self) -> None:
        ticks = 0
        while not self._stopping:
            await asyncio.sleep(self._poll_interval)
            await self.check_version()
            ticks += 1
            if ticks % 20 == 0:  # every ~5 s
                await self.flush_touched()


def store_lookup(services: Services) -> KeyLookup:
    """A ``KeyLookup`` reading the store of record (in a thread: the store is synchronous)."""
    direct = services.direct

    async def lookup(key_hash: str) -> KeyEntry | None:
        if direct is not None:
            record = await in_thread(lambda: direct.find_api_key(key_hash=key_hash))
        else:
            await orm_loaded()
            from store import repository

            record = await in_store(
                services.db, lambda s: repository.find_api_key(s, key_hash=key_hash)
            )
        if record is None:
            return None
        return KeyEntry(record.account_id, record.key_id, record.revoked, rules_of(record))

    return lookup


def rules_of(record: ApiKeyRecord) -> KeyRules | None:
    """The key's own limits for the reserve script; None when it has none at all."""
    if not record.limited:
        return None
    expires = record.expires_at
    return KeyRules(
        record.key_id,
        credit_limit=record.credit_limit,
        requests_per_minute=record.requests_per_minute,
        expires_at_ms=None if expires is None else to_ms(expires),
        routes=record.routes,
    )


def store_toucher(services: Services) -> Toucher:
    """A ``Toucher`` writing ``last_used_at`` for a batch of key ids and times of use."""
    direct = services.direct

    async def touch(used: dict[str, datetime]) -> None:
        if direct is not None:
            await in_thread(lambda: direct.touch_api_keys(used=used))
        else:
            await orm_loaded()
            from store import repository

            await in_store(services.db, lambda s: repository.touch_api_keys(s, used=used))

    return touch
