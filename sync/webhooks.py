"""Webhook notifications: ``credits.low``, ``credits.exhausted``, ``subscription.expired``,
``subscription.renewed``, POSTed as JSON to ``CREDITGATE_WEBHOOK_URL``.

Never on a request's path: ``notify_nowait`` puts the event on a bounded queue and returns;
one background task delivers them in order, retrying with exponential backoff. A full queue
drops the event with a warning (a slow receiver must not grow memory without bound).

Each POST carries ``X-Creditgate-Signature: sha256=<hex>``, HMAC-SHA256 of the exact body
keyed by ``CREDITGATE_WEBHOOK_SECRET``, and ``X-Creditgate-Timestamp`` (Unix seconds); the
body holds the same time in ``createdAt`` so the signed bytes bind it. A receiver recomputes
the HMAC over the raw body and compares in constant time (``verify_signature``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from gateway.accounts.restore import snapshot_of
from gateway.accounts.usage import iso_ms, snapshot_usage, usage_body
from gateway.credits.results import AccountState
from gateway.settings import Settings, Tier
from store.records import Movement

log = logging.getLogger("creditgate.webhooks")

CREDITS_LOW = "credits.low"
CREDITS_EXHAUSTED = "credits.exhausted"
SUBSCRIPTION_EXPIRED = "subscription.expired"
SUBSCRIPTION_RENEWED = "subscription.renewed"
EVENTS = (CREDITS_LOW, CREDITS_EXHAUSTED, SUBSCRIPTION_EXPIRED, SUBSCRIPTION_RENEWED)

LOW_PERCENT = 20
SIGNATURE_HEADER = "X-Creditgate-Signature"
TIMESTAMP_HEADER = "X-Creditgate-Timestamp"
EVENT_HEADER = "X-Creditgate-Event"

Sleep = Callable[[float], Awaitable[None]]


def low_line(state: AccountState) -> int:
    """Credits at or below which an account is low: 20% of its tier's monthly allowance."""
    return state.allowance * LOW_PERCENT // 100


def events_for(old: AccountState | None, new: AccountState) -> list[str]:
    """The events one change of an account triggers (pure: old and new state in, names out).

    ``credits.low`` and ``credits.exhausted`` fire once, when the balance crosses the line
    downwards (a balance that stays low fires nothing more); a drop straight to 0 is only
    ``credits.exhausted``. ``subscription.expired``: the subscription ended because its end
    passed (an operator's early downgrade is not an expiry). ``subscription.renewed``: the
    same tier's subscription now ends later.
    """
    if old is None:
        return []
    found: list[str] = []
    before, after = old.credits_remaining, new.credits_remaining
    line = low_line(new)
    if before > 0 and after <= 0:
        found.append(CREDITS_EXHAUSTED)
    elif before > line >= after > 0:
        found.append(CREDITS_LOW)
    ended = old.subscription_ends_ms
    if old.subscribed and not new.subscribed and ended is not None and new.now_ms >= ended:
        found.append(SUBSCRIPTION_EXPIRED)
    if (
        old.subscribed
        and new.subscribed
        and old.tier == new.tier
        and (new.subscription_ends_ms or 0) > (ended or 0) > 0
    ):
        found.append(SUBSCRIPTION_RENEWED)
    return found


def movement_events(movement: Movement, tiers: Mapping[str, Tier]) -> list[str]:
    """The events one synced outbox movement triggers (for the sync worker, after commit).

    A movement carries the account's state after it and its deltas, so the balance before
    is known; ``expire`` and ``renew`` movements name the subscription events themselves.
    Driven from the sync worker, each event is announced once per movement however many
    gateway replicas served the traffic.
    """
    found: list[str] = []
    after = movement.credits_remaining
    before = after - movement.credits_delta
    tier = tiers.get(movement.tier) or tiers.get("free")
    line = (tier.credits if tier is not None else 0) * LOW_PERCENT // 100
    if before > 0 and after <= 0:
        found.append(CREDITS_EXHAUSTED)
    elif before > line >= after > 0:
        found.append(CREDITS_LOW)
    if movement.kind == "expire":
        found.append(SUBSCRIPTION_EXPIRED)
    elif movement.kind == "renew":
        found.append(SUBSCRIPTION_RENEWED)
    return found


def signature(secret: bytes, body: bytes) -> str:
    """The header value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """For receivers: True when ``header`` is the signature of ``body`` under ``secret``."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


class Notifier:
    """Delivers webhook events in the background; does nothing when no URL is configured."""

    def __init__(
        self,
        url: str | None,
        secret: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        max_queue: int = 1000,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        timeout: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret.encode() if secret else None
        self._client = client
        self._own_client = client is None
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.delivered = 0
        self.dropped = 0
        self.failed = 0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Notifier:
        return cls(settings.webhook_url, settings.webhook_secret, **options)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def notify_nowait(self, event: str, account: str, data: dict[str, Any]) -> None:
        """Queue one event for delivery and return at once; drop it (logged) when full."""
        if not self.enabled:
            return
        now = self._clock()
        payload = {
            "id": "evt_" + secrets.token_hex(12),
            "type": event,
            "account": account,
            "createdAt": iso_ms(int(now * 1000)),
            "data": data,
        }
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full: dropped %s for account %s", event, account)

    def notify_change(self, old: AccountState | None, new: AccountState) -> list[str]:
        """Queue whatever events a change of ``new.account`` triggers; returns their names."""
        found = events_for(old, new) if self.enabled else []
        for event in found:
            self.notify_nowait(event, new.account, usage_body(new))
        return found

    def notify_movements(self, movements: Iterable[Movement], tiers: Mapping[str, Tier]) -> int:
        """Queue the events of synced movements (call after the store committed them)."""
        queued = 0
        if not self.enabled:
            return queued
        for m in movements:
            for event in movement_events(m, tiers):
                self.notify_nowait(event, m.account_id, _movement_data(m))
                queued += 1
        return queued

    async def start(self) -> None:
        if not self.enabled or self._task is not None:
            return
        if self._secret is None:
            log.warning("CREDITGATE_WEBHOOK_SECRET is not set: webhooks go out unsigned")
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        self._task = asyncio.create_task(self._drain(), name="creditgate-webhooks")

    async def join(self) -> None:
        """Wait until every queued event is delivered or given up (for tests and shutdown)."""
        await self._queue.join()

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Give queued events up to ``grace`` seconds, then stop and close the client."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def _drain(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(payload)
            except Exception:  # one bad event must not stop the deliveries after it
                log.exception("webhook %s could not be delivered", payload["type"])
            finally:
                self._queue.task_done()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        assert self._client is not None and self.url is not None
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: payload["type"],
            TIMESTAMP_HEADER: str(int(self._clock())),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        delay = self.base_delay
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
                if response.is_success:
                    self.delivered += 1
                    return
                problem = f"status {response.status_code}"
                if response.is_client_error and response.status_code not in (408, 429):
                    break  # the receiver refuses this event; sending it again will not help
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning(
                "webhook %s attempt %d/%d failed: %s",
                payload["type"],
                attempt,
                self.max_attempts,
                problem,
            )
            if attempt < self.max_attempts:
                await self._sleep(delay)
                delay = min(delay * 2, self.max_delay)
        self.failed += 1
        log.error("webhook %s for account %s given up", payload["type"], payload["account"])


def _movement_data(m: Movement) -> dict[str, Any]:
    """What a receiver learns of the account from a movement: the usage object's fields."""
    return {
        **snapshot_usage(m.account_id, snapshot_of(m)),
        "eventId": m.event_id,
        "kind": m.kind,
        "requestId": m.request_id or None,
    }
