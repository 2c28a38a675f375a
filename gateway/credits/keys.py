"""Every Redis key creditgate uses, built here and nowhere else.

Layout: ``cg:2:{<tag>}:<kind>[:<account>[:<request id>]]``. ``2`` is the layout version
(bump it to migrate; ``sync.relayout`` moves layout 1's keys). ``{<tag>}`` is the Redis
Cluster hash tag of a bucket: an account is mapped to one of ``BUCKETS`` buckets by CRC32 of
its id, and its state, its reservations, its bucket's reservation deadlines and its bucket's
outbox stream all carry that tag, so every key one script touches lives in one slot.

The tags are chosen so that bucket ``k`` hashes to slot ``k * 64 + 32``: the buckets sit
evenly spaced over the 16,384 slots, and any even split of the slots over 2 to 64 masters
(``redis-cli --cluster create``) gives every master ``BUCKETS / masters`` buckets, give or take
one. The number of buckets and the tags are fixed for a layout version: changing them would
move accounts to other keys and streams.
"""

from __future__ import annotations

import binascii
import functools
import zlib
from dataclasses import dataclass

PREFIX = "cg"
LAYOUT = 2
BUCKETS = 256
SLOTS = 16_384
"""Redis Cluster's hash slots."""

TAGS: tuple[str, ...] = tuple(
    "b6958 b2149 b1955 b5144 b78593 b24779 b22817 b1732 b29281 b5433 b67836 b20478 "
    "b28385 b1245 b19439 b6248 b13545 b9446 b14548 b42947 b12441 b8542 b42720 b43843 "
    "b43353 b29608 b13032 b9131 b10649 b58390 b12136 b8035 b9402 b2584 b42903 b5589 "
    "b8506 b819 b43807 b15408 b48291 b11709 b309 b7781 b28748 b1688 b8071 b6685 b13188 "
    "b17999 b5100 b1911 b3009 b7818 b1776 b11890 b5477 b38284 b7308 b780 b1201 b39380 "
    "b17289 b84 b60908 b5500 b45987 b13588 b89571 b1376 b44883 b890 b380 b7708 b1866 "
    "b5077 b25929 b17689 b22924 b1601 b5189 b1998 b2184 b6995 b15008 b11819 b3080 b7891 "
    "b7381 b709 b11309 b42874 b6285 b8471 b1288 b28348 b10959 b14148 b9046 b13145 "
    "b101441 b29918 b8142 b12041 b9531 b13432 b29208 b43753 b49 b12536 b43934 b10249 "
    "b5544 b88431 b2549 b54982 b1332 b61848 b24379 b55886 b20078 b24869 b5033 b1822 "
    "b6648 b19039 b1645 b22960 b8943 b9620 b43442 b29119 b9847 b8724 b10158 b14949 "
    "b14259 b47924 b13254 b9357 b42031 b46820 b12350 b8253 b51896 b20369 b29590 b5322 "
    "b19328 b6559 b28494 b1554 b4936 b5655 b79386 b2658 b5832 b1023 b20879 b24068 b7419 "
    "b18268 b5366 b38595 b17598 b41997 b1510 b39491 b5611 b4972 b13699 b21939 b1067 "
    "b5876 b3718 b69287 b418 b7090 b15809 b11018 b2985 b6194 b5988 b1199 b47960 b5298 "
    "b9313 b2295 b46864 b15319 b8217 b3391 b11418 b47817 b7490 b9264 b1599 b28459 b6594 "
    "b8360 b2695 b9713 b5698 b82908 b3791 b8617 b15719 b101314 b4805 b5766 b491 b7019 "
    "b5901 b1110 b13989 b17198 b62966 b13299 b88364 b5211 b63862 b3318 b89260 b1467 "
    "b5722 b4841 b20769 b113494 b1154 b5945 b6159 b2948 b2258 b62922 b5255 b88320 b24468 "
    "b63826 b1423 b89224 b29519 b43042 b9220 b13323 b46957 b10558 b8324 b12227 b9757 "
    "b8834 b100254 b14659 b8653 b9930 b83848 b42431".split()
)
"""The hash tag of each bucket: ``spaced_tags(BUCKETS)``, written out so that no process
pays for the search and a change of the rule cannot silently move data (a test recomputes
it)."""


def slot_of(tag: str) -> int:
    """Redis Cluster's slot of a hash tag: CRC16 (XMODEM) of it, modulo 16,384."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def spaced_tags(buckets: int) -> tuple[str, ...]:
    """Tags ``b<n>`` putting bucket ``k`` in slot ``k * stride + stride // 2`` exactly: for
    each such slot, the first ``n`` (counting from 0) that lands there. Deterministic."""
    stride = SLOTS // buckets
    found: dict[int, str] = {}
    n = 0
    while len(found) < buckets:
        tag = f"b{n}"
        slot = slot_of(tag)
        if slot % stride == stride // 2:
            found.setdefault(slot // stride, tag)
        n += 1
    return tuple(found[k] for k in range(buckets))


def bucket_of(account: str) -> int:
    """The bucket of an account: stable across processes and machines."""
    return zlib.crc32(account.encode()) % BUCKETS


def _tag(bucket: int) -> str:
    return f"{PREFIX}:{LAYOUT}:{{{TAGS[bucket]}}}"


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """The keys a credit script of one account receives, all in one hash slot."""

    account: str
    state: str
    deadlines: str
    outbox: str
    key_limits: str
    """The account's API keys' own spend and rate (``scopes.KeyRules``), one hash."""

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
        key_limits=f"{tag}:a:{account}:k",
    )


STATE_PATTERN = f"{PREFIX}:{LAYOUT}:{{b*}}:a:*"
"""A SCAN pattern matching every account state key (and reservation and operation keys: see
``account_of``)."""


def account_of(key: str) -> str | None:
    """The account whose state ``key`` is; None for a reservation, its key hash or any
    other key."""
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
"""Counter bumped on every change of an API key (a revocation, new limits); replicas drop
their key cache when it moves."""

KEYS_CHANNEL = f"{PREFIX}:{LAYOUT}:keys:revoked"
"""Pub/sub channel announcing a changed (revoked, limited) key hash, for replicas to forget it
at once. Its name stays as it was: subscribers of older versions listen on it."""

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


# Layout 1 (64 buckets tagged ``{b00}`` .. ``{b63}``), for ``sync.relayout`` only.
LEGACY_LAYOUT = 1
LEGACY_BUCKETS = 64
LEGACY_ACCOUNT_PATTERN = f"{PREFIX}:{LEGACY_LAYOUT}:{{b*}}:a:*"
"""Every layout-1 key of an account: state, reservations and operation markers."""


def legacy_outbox(bucket: int) -> str:
    return f"{PREFIX}:{LEGACY_LAYOUT}:{{b{bucket:02d}}}:outbox"


def legacy_deadlines(bucket: int) -> str:
    return f"{PREFIX}:{LEGACY_LAYOUT}:{{b{bucket:02d}}}:deadlines"


def relayout(legacy_key: str) -> str | None:
    """The current layout's name of a layout-1 account key (its state, a reservation or an
    operation marker); None for a key that is none of these."""
    head = f"{PREFIX}:{LEGACY_LAYOUT}:{{b"
    if not legacy_key.startswith(head):
        return None
    _, found, rest = legacy_key.partition("}:a:")
    account, colon, suffix = rest.partition(":")
    if not found or not account or not _FORBIDDEN.isdisjoint(account):
        return None
    if colon and not (suffix.startswith(("r:", "o:")) and len(suffix) > 2):
        return None
    return account_keys(account).state + colon + suffix


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
