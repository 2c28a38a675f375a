"""A key's own limits, as the reserve script enforces them next to its account's credits and rate.

An account's keys share its credits; a key may narrow what it can spend: an expiry, a credit
limit per monthly period of the account, its own requests per minute and the path prefixes it
may call. The store of record keeps them with the key (``store.models.ApiKey``); the key cache
hands them to the proxy with the caller, and the proxy passes them to ``CreditEngine.reserve``,
whose script checks them in the account's slot, all or nothing with the account's own checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyRules:
    """What one key may do beyond its account's rules; ``None`` fields do not limit."""

    key_id: str
    credit_limit: int | None = None
    """Credits the key may spend (held or charged) in one monthly period of its account."""
    requests_per_minute: int | None = None
    expires_at_ms: int | None = None
    """Milliseconds since the epoch at which the key stops working (the scripts' clock)."""
    routes: tuple[str, ...] | None = None
    """Path prefixes the key may call (``/v1`` allows ``/v1`` and ``/v1/...``); None: every
    route."""

    @property
    def counted(self) -> bool:
        """True when the reserve script keeps state for the key (its spend or its rate)."""
        return self.credit_limit is not None or self.requests_per_minute is not None
