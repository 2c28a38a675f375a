"""What a request holds and is charged, flat or metered by tokens (``gateway.proxy.pricing``)."""

from __future__ import annotations

import json

import pytest

from gateway.proxy.pricing import charge_of, hold_of
from gateway.settings import Route

FLAT = Route(prefix="/a/", upstream="http://x", cost=3)
METERED = Route(prefix="/m/", upstream="http://x", cost=2, pricing="tokens", max_credits=50)


@pytest.mark.parametrize(
    ("body", "hold"),
    [
        (None, 50),  # streamed unread: the route's bound
        (b"", 50),
        (b'{"model": "m"}', 50),
        (json.dumps({"max_tokens": 10_000}).encode(), 5),
        (json.dumps({"max_completion_tokens": 10_001}).encode(), 6),
        (json.dumps({"max_tokens": 9000, "max_completion_tokens": 3000}).encode(), 2),
        (json.dumps({"max_tokens": 1}).encode(), 2),  # at least the cost
        (json.dumps({"max_tokens": 10**9}).encode(), 50),  # at most max_credits
        (json.dumps({"max_tokens": 0}).encode(), 50),  # not a limit
        (json.dumps({"max_tokens": True}).encode(), 50),
        (json.dumps({"max_tokens": "4000"}).encode(), 50),
        (b'[{"max_tokens": 4000}]', 50),
        (b"{max_tokens", 50),
    ],
)
def test_the_hold_of_a_metered_request(body: bytes | None, hold: int) -> None:
    assert hold_of(METERED, body) == hold


def test_a_flat_route_holds_its_cost_whatever_the_body() -> None:
    assert hold_of(FLAT, json.dumps({"max_tokens": 100_000}).encode()) == 3
    assert charge_of(FLAT, 100_000, 3) == 3


@pytest.mark.parametrize(
    ("tokens", "held", "charge"),
    [
        (0, 50, 2),  # at least the cost
        (4000, 50, 2),
        (4001, 50, 3),  # ceil(tokens / 2000)
        (60_000, 50, 30),
        (200_000, 50, 50),  # never more than held
        (60_000, 7, 7),  # held less than the bound: capped at it
        (None, 50, 50),  # no tokens reported: the hold
    ],
)
def test_the_charge_of_a_metered_request(tokens: int | None, held: int, charge: int) -> None:
    assert charge_of(METERED, tokens, held) == charge
