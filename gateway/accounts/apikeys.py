"""API keys: ``cg_`` followed by 43 URL-safe random characters (256 bits).

The store keeps only the key's SHA-256 (a key this random needs no slow hash) and a short
display prefix; the key itself is shown once, when it is created, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "cg_"
_KEY_SHAPE = re.compile(r"cg_[A-Za-z0-9_-]{32,128}")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: ``secret`` goes to the caller once; the rest is stored."""

    secret: str
    key_id: str
    key_hash: str
    display_prefix: str


def new_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(
        secret=secret,
        key_id="key_" + secrets.token_hex(8),
        key_hash=hash_key(secret),
        display_prefix=secret[:7],
    )


def hash_key(secret: str) -> str:
    """The hex SHA-256 the store looks keys up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def well_formed(secret: str) -> bool:
    """Cheap shape check, so garbage never reaches the cache or the store."""
    return _KEY_SHAPE.fullmatch(secret) is not None


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two key hashes."""
    return hmac.compare_digest(a.encode(), b.encode())
