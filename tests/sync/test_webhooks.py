"""Webhooks: which changes fire which events, signed bodies, retries, and never blocking."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest

from gateway.credits.results import AccountState
from gateway.settings import DEFAULT_TIERS, Settings
from store.records import Movement
from sync.webhooks import (
    CREDITS_EXHAUSTED,
    CREDITS_LOW,
    SIGNATURE_HEADER,
    SUBSCRIPTION_EXPIRED,
    SUBSCRIPTION_RENEWED,
    TIMESTAMP_HEADER,
    Notifier,
    events_for,
    movement_events,
    signature,
    verify_signature,
)

NOW = 1_790_000_000_000
SECRET = "whsec-test"


def state(**changes: object) -> AccountState:
    base = AccountState(
        account="acct_1",
        plan_credits=100,
        bonus_credits=0,
        tier="pro",
        subscribed=True,
        subscription_ends_ms=NOW + 1000,
        period_end_ms=NOW + 10_000,
        total_tokens=0,
        monthly_tokens=0,
        version=1,
        allowance=100,
        requests_per_minute=120,
        now_ms=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (21, 20, [CREDITS_LOW]),
        (50, 5, [CREDITS_LOW]),
        (20, 19, []),
        (21, 21, []),
        (2, 0, [CREDITS_EXHAUSTED]),
        (50, 0, [CREDITS_EXHAUSTED]),
        (0, 0, []),
        (0, 100, []),
    ],
)
def test_credit_events_fire_once_when_crossing(
    before: int, after: int, expected: list[str]
) -> None:
    assert events_for(state(plan_credits=before), state(plan_credits=after)) == expected


def test_bonus_credits_count_towards_the_balance() -> None:
    old = state(plan_credits=21)
    assert events_for(old, state(plan_credits=0, bonus_credits=30)) == []


def test_expiry_fires_but_an_early_downgrade_does_not() -> None:
    old = state(plan_credits=5)
    free = dict(tier="free", subscribed=False, subscription_ends_ms=None, allowance=5)
    expired = state(plan_credits=5, now_ms=NOW + 1000, **free)
    early = state(plan_credits=5, now_ms=NOW + 999, **free)
    assert events_for(old, expired) == [SUBSCRIPTION_EXPIRED]
    assert events_for(old, early) == []


def test_renewal_fires_when_the_same_tier_ends_later() -> None:
    old = state()
    assert events_for(old, state(subscription_ends_ms=NOW + 5000)) == [SUBSCRIPTION_RENEWED]
    assert events_for(old, state(tier="enterprise", subscription_ends_ms=NOW + 5000)) == []
    assert events_for(None, state()) == []


class Receiver:
    """A webhook endpoint over httpx.MockTransport: answers scripted statuses, may hold."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[httpx.Request] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await self.release.wait()
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_body_is_signed_with_the_secret() -> None:
    receiver = Receiver()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client, clock=lambda: 1.5e9)
        await notifier.start()
        notifier.notify_nowait(CREDITS_LOW, "acct_1", {"creditsRemaining": 3})
        await notifier.join()
        await notifier.aclose()
    (request,) = receiver.requests
    body = request.content
    assert verify_signature(SECRET.encode(), body, request.headers[SIGNATURE_HEADER])
    assert not verify_signature(b"other", body, request.headers[SIGNATURE_HEADER])
    assert request.headers[SIGNATURE_HEADER] == signature(SECRET.encode(), body)
    assert request.headers[TIMESTAMP_HEADER] == "1500000000"
    payload = json.loads(body)
    assert payload["type"] == CREDITS_LOW
    assert payload["account"] == "acct_1"
    assert payload["data"] == {"creditsRemaining": 3}
    assert payload["createdAt"] == "2017-07-14T02:40:00.000Z"


async def test_server_errors_are_retried_with_exponential_backoff() -> None:
    receiver = Receiver([500, 503, 200])
    sleeps = Sleeps()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client, sleep=sleeps)
        await notifier.start()
        notifier.notify_nowait(CREDITS_EXHAUSTED, "acct_1", {})
        await notifier.join()
        await notifier.aclose()
    assert len(receiver.requests) == 3
    assert len({r.content for r in receiver.requests}) == 1
    assert sleeps.delays == [0.5, 1.0]
    assert (notifier.delivered, notifier.failed) == (1, 0)


async def test_gives_up_after_max_attempts_and_on_a_refusal() -> None:
    receiver = Receiver([500] * 3 + [400])
    sleeps = Sleeps()
    async with receiver.client() as client:
        notifier = Notifier(
            "http://hooks.test/in", SECRET, client=client, sleep=sleeps, max_attempts=3
        )
        await notifier.start()
        notifier.notify_nowait(CREDITS_LOW, "acct_1", {})
        notifier.notify_nowait(CREDITS_LOW, "acct_2", {})
        await notifier.join()
        await notifier.aclose()
    assert len(receiver.requests) == 4
    assert (notifier.delivered, notifier.failed) == (0, 2)


async def test_connection_errors_are_retried() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(flaky)) as client:
        notifier = Notifier("http://hooks.test/in", None, client=client, sleep=Sleeps())
        await notifier.start()
        notifier.notify_nowait(SUBSCRIPTION_RENEWED, "acct_1", {})
        await notifier.join()
        await notifier.aclose()
    assert (calls, notifier.delivered) == (2, 1)


async def test_notify_never_blocks_and_a_full_queue_drops() -> None:
    receiver = Receiver()
    receiver.release.clear()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client, max_queue=2)
        await notifier.start()
        for _ in range(5):
            notifier.notify_nowait(CREDITS_LOW, "acct_1", {})
        # The receiver holds the first delivery: nothing has arrived, nothing waited on it.
        assert receiver.requests == []
        assert notifier.dropped >= 2
        receiver.release.set()
        await notifier.join()
        await notifier.aclose()
    assert len(receiver.requests) + notifier.dropped == 5


async def test_notify_change_queues_the_triggered_events() -> None:
    receiver = Receiver()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client)
        await notifier.start()
        fired = notifier.notify_change(state(plan_credits=30), state(plan_credits=10))
        await notifier.join()
        await notifier.aclose()
    assert fired == [CREDITS_LOW]
    payload = json.loads(receiver.requests[0].content)
    assert payload["data"]["creditsRemaining"] == 10


async def test_a_movement_tells_the_usage_fields_after_it_and_the_event() -> None:
    receiver = Receiver()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client)
        await notifier.start()
        assert notifier.notify_movements([movement("hold", 20, -1)], DEFAULT_TIERS) == 1
        await notifier.join()
        await notifier.aclose()
    data = json.loads(receiver.requests[0].content)["data"]
    assert list(data.items()) == [
        ("accountId", "acct_1"),
        ("credits", 20),
        ("bonusCredits", 0),
        ("creditsRemaining", 20),
        ("totalTokensUsed", 0),
        ("monthlyTokensUsed", 0),
        ("monthlyResetDate", "2026-09-21T14:13:30.000Z"),
        ("isSubscribed", True),
        ("subscriptionTier", "pro"),
        ("subscriptionEndsAt", "2026-09-21T14:13:21.000Z"),
        ("eventId", "7-1-0"),
        ("kind", "hold"),
        ("requestId", "r1"),
    ]


async def test_without_a_url_nothing_is_sent() -> None:
    notifier = Notifier.from_settings(Settings.load(webhook_url=None))
    await notifier.start()
    notifier.notify_nowait(CREDITS_LOW, "acct_1", {})
    assert notifier.notify_change(state(plan_credits=30), state(plan_credits=10)) == []
    await notifier.aclose()
    assert not notifier.enabled


def movement(kind: str, plan_after: int, dp: int, **changes: object) -> Movement:
    base = Movement(
        event_id="7-1-0",
        account_id="acct_1",
        kind=kind,
        plan_delta=dp,
        bonus_delta=0,
        tokens=0,
        request_id="r1",
        reason=None,
        occurred_ms=NOW,
        version=3,
        plan_credits=plan_after,
        bonus_credits=0,
        tier="pro",
        subscribed=True,
        subscription_ends_ms=NOW + 1000,
        period_end_ms=NOW + 10_000,
        total_tokens=0,
        monthly_tokens=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (movement("hold", 20, -1), [CREDITS_LOW]),
        (movement("hold", 19, -1), []),
        (movement("refund", 21, 1), []),
        (movement("hold", 0, -1), [CREDITS_EXHAUSTED]),
        (movement("charge", 0, 0), []),
        (
            movement("expire", 5, -95, tier="free", subscribed=False, subscription_ends_ms=None),
            [SUBSCRIPTION_EXPIRED],
        ),
        (movement("renew", 50, 0), [SUBSCRIPTION_RENEWED]),
        (movement("reset", 100, 90), []),
    ],
)
def test_movement_events(m: Movement, expected: list[str]) -> None:
    assert movement_events(m, DEFAULT_TIERS) == expected


async def test_notify_movements_queues_each_event_once() -> None:
    receiver = Receiver()
    async with receiver.client() as client:
        notifier = Notifier("http://hooks.test/in", SECRET, client=client)
        await notifier.start()
        queued = notifier.notify_movements(
            [movement("hold", 20, -1), movement("hold", 19, -1), movement("hold", 0, -1)],
            DEFAULT_TIERS,
        )
        await notifier.join()
        await notifier.aclose()
    assert queued == 2
    types = [json.loads(r.content)["type"] for r in receiver.requests]
    assert types == [CREDITS_LOW, CREDITS_EXHAUSTED]
    assert json.loads(receiver.requests[0].content)["data"]["creditsRemaining"] == 20
