"""Every Redis key creditgate uses, built here and nowhere else.

Layout: ``cg:1:{b<NN>}:<kind>[:<account>[:<request id>]]``. ``1`` is the layout version
(bump it to migrate). ``{b<NN>}`` is the Redis Cluster hash tag: an account is mapped to one
of ``BUCKETS`` buckets by CRC32 of its id, and its state, its reservations, its bucket's
reservation deadlines and its bucket's outbox stream all carry that tag, so every key one
script touches lives in one slot. The number of buckets is fixed for a layout version:
changing it would move accounts to other streams.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

PREFIX = "cg"
LAYOUT = 1
BUCKETS = 64


def bucket_of(account: str) -> int:
    """The bucket of an account: stable across processes and machines."""
    return zlib.crc32(account.encode()) % BUCKETS


def _tag(bucket: int) -> str:
    return f"{PREFIX}:{LAYOUT}:{{b{bucket:02d}}}"


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """The keys a credit script of one account receives, all in one hash slot."""

    account: str
    state: str
    deadlines: str
    outbox: str

    def reservation(self, request_id: str) -> str:
        return f"{self.state}:r:{request_id}"

    def replay(self, request_id: str) -> str:
        """What a proxied request with an ``Idempotency-Key`` (its derived ``request_id``) asked,
        and its first answer once kept, for the key's retries (``gateway.proxy.replays``)."""
        return f"{self.state}:p:{request_id}"

    def operation(self, request_id: str) -> str:
        """The marker of an admin operation (a grant, a tier change) applied once."""
        return f"{self.state}:o:{request_id}"


_FORBIDDEN = frozenset("|:{}")


@functools.lru_cache(maxsize=65_536)
def account_keys(account: str) -> AccountKeys:
    """The keys of an account. Its id may not hold ``|`` (the deadline index separates account
    and request id with it), ``:`` (a reservation key could then equal another account's
    key) or braces (they would move the hash tag). Cached: the hot path asks twice a request."""
    if not account or not _FORBIDDEN.isdisjoint(account):
        raise ValueError(f"account id {account!r} is empty or holds one of | : {{ }}")
    bucket = bucket_of(account)
    tag = _tag(bucket)
    return AccountKeys(
        account=account,
        state=f"{tag}:a:{account}",
        deadlines=f"{tag}:deadlines",
        outbox=f"{tag}:outbox",
    )


STATE_PATTERN = f"{PREFIX}:{LAYOUT}:{{b*}}:a:*"
"""A SCAN pattern matching every account state key (and reservation and operation keys: see
``account_of``)."""


def account_of(key: str) -> str | None:
    """The account whose state hash ``key`` is; None for a reservation or any other key."""
    _, found, account = key.partition(":a:")
    if not found or not account or not _FORBIDDEN.isdisjoint(account):
        return None
    return account if account_keys(account).state == key else None


def outbox(bucket: int) -> str:
    """The outbox stream of a bucket, which the sync worker reads."""
    return f"{_tag(bucket)}:outbox"


def deadlines(bucket: int) -> str:
    """The sorted set of open reservations of a bucket, scored by deadline (ms)."""
    return f"{_tag(bucket)}:deadlines"


def all_outboxes() -> list[str]:
    return [outbox(b) for b in range(BUCKETS)]


def all_deadlines() -> list[str]:
    return [deadlines(b) for b in range(BUCKETS)]


# Keys outside the credit scripts: no slot constraint, one key each.
KEYS_VERSION = f"{PREFIX}:{LAYOUT}:keys:version"
"""Counter bumped on every API key revocation; replicas drop their key cache when it moves."""

KEYS_CHANNEL = f"{PREFIX}:{LAYOUT}:keys:revoked"
"""Pub/sub channel announcing a revoked key hash, for replicas to forget it at once."""

OUTBOX_GROUP = "creditgate-sync"
"""The consumer group the sync workers share on every outbox stream."""


def admin_answer(scope: str, key_digest: str) -> str:
    """The first answer to an admin write sent with an ``Idempotency-Key`` (or the claim of the
    attempt still running it), for its retries. ``scope`` is the front end (``admin``, ``cli``),
    ``key_digest`` the key's hex SHA-256: a client's key may hold braces or colons, which would
    move the hash tag or shape another key. Apart from the proxy's: its Idempotency-Keys are
    reservations of an account (``AccountKeys.reservation``), and this never lives there."""
    return f"{PREFIX}:{LAYOUT}:admin:idempotency:{scope}:{key_digest}"


def outbox_rejected(bucket: int) -> str:
    """Outbox events the store refused or that did not parse, set aside by the sync worker
    (fields of the event plus ``event`` and ``error``) for people to look at."""
    return f"{_tag(bucket)}:outbox:rejected"


def ui_session(token_digest: str) -> str:
    """A signed-in page session (dashboard or console), under the hex SHA-256 of its cookie's
    token: a Redis dump holds no cookie that would sign anyone in."""
    return f"{PREFIX}:{LAYOUT}:ui:session:{token_digest}"


def ui_signin(token_digest: str) -> str:
    """A one-time sign-in token (``creditgate demo``'s link), under its hex SHA-256."""
    return f"{PREFIX}:{LAYOUT}:ui:signin:{token_digest}"


def ui_form(nonce_digest: str) -> str:
    """A page form already sent (its one-time nonce's hex SHA-256): a resubmitted "create key"
    form (a reload) is answered once, not with a second key."""
    return f"{PREFIX}:{LAYOUT}:ui:form:{nonce_digest}"
