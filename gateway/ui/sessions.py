"""Page sessions in Redis: a random cookie token for a signed-in API key or admin token.

The browser holds only the opaque token (HttpOnly, SameSite=Strict, Secure on https); Redis
holds, under the token's SHA-256, who it is (an account and key id, or an operator), the
session's CSRF token, and a TTL of ``CREDITGATE_UI_SESSION_TTL`` seconds from sign-in. The
key or admin token itself is never stored. ``SignIns`` are one-time tokens that become a
session once (``creditgate demo``'s link): the first to delete one wins.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Literal

from gateway.credits import keys
from gateway.credits.client import RedisClient
from gateway.services import Services

Role = Literal["holder", "operator"]
SIGNIN_TTL_MS = 300_000
"""A one-time sign-in token lasts five minutes."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """Who signed in: a ``holder`` (their account and the key they used) or an ``operator``."""

    role: Role
    csrf: str
    account_id: str | None = None
    key_id: str | None = None

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """Create, read and end sessions; ``ttl_s`` from the settings."""

    def __init__(self, redis: RedisClient, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def start(
        self, role: Role, *, account_id: str | None = None, key_id: str | None = None
    ) -> str:
        """A new session; returns the cookie's token (never stored as is)."""
        token = secrets.token_urlsafe(32)
        session = Session(role, secrets.token_urlsafe(24), account_id, key_id)
        await self.redis.set(
            keys.ui_session(digest(token)), json.dumps(asdict(session)), px=self.ttl_s * 1000
        )
        return token

    async def find(self, token: str | None, role: Role) -> Session | None:
        """The live session of ``token`` for ``role``; None when absent, expired or another's."""
        if not token or len(token) > 128:
            return None
        raw = await self.redis.get(keys.ui_session(digest(token)))
        if raw is None:
            return None
        session = Session(**json.loads(raw))
        return session if session.role == role else None

    async def end(self, token: str | None) -> None:
        if token:
            await self.redis.delete(keys.ui_session(digest(token)))


class SignIns:
    """One-time sign-in tokens for an account's key: minted by ``creditgate demo``."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def mint(self, account_id: str, key_id: str) -> str:
        token = secrets.token_urlsafe(32)
        value = json.dumps({"account_id": account_id, "key_id": key_id})
        await self.redis.set(keys.ui_signin(digest(token)), value, px=SIGNIN_TTL_MS)
        return token

    async def redeem(self, token: str) -> tuple[str, str] | None:
        """The (account, key id) of an unused, unexpired token, which is used up."""
        if not token or len(token) > 128:
            return None
        key = keys.ui_signin(digest(token))
        raw = await self.redis.get(key)
        if raw is None or await self.redis.delete(key) != 1:
            return None
        found = json.loads(raw)
        return str(found["account_id"]), str(found["key_id"])


FORM_TTL_MS = 86_400_000


def form_nonce() -> str:
    """A nonce for a form that must not act twice (``first_use``)."""
    return secrets.token_urlsafe(16)


async def first_use(redis: RedisClient, nonce: str) -> bool:
    """True the first time ``nonce`` is sent (kept a day), False on every resend."""
    if not nonce or len(nonce) > 64:
        return False
    claimed = await redis.set(keys.ui_form(digest(nonce)), "1", px=FORM_TTL_MS, nx=True)
    return bool(claimed)


def sessions_of(services: Services) -> Sessions:
    """The page sessions, kept as long as the settings say (``CREDITGATE_UI_SESSION_TTL``)."""
    return Sessions(services.redis, ttl_s=services.settings.ui_session_ttl)
