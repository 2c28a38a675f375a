"""A key's fields as requests give them: every bad field is a 400 naming it, and the routes
are plain path prefixes under a configured proxied route."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.accounts import keyfields
from gateway.accounts.keyfields import KeyLimits
from gateway.errors import InvalidRequest

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
ROUTES = ["/api/projects/", "/api/review/", "/v1"]


def create(**body: Any) -> keyfields.CreateKey:
    return keyfields.create_key(body, ROUTES, now=NOW)


def test_no_field_is_no_limit_and_every_field_is_read() -> None:
    assert create() == keyfields.CreateKey("", KeyLimits())
    assert create(name=None, creditLimit=None, routes=None) == keyfields.CreateKey("", KeyLimits())
    wanted = create(
        name=" ci ",
        expiresAt="2027-01-31T02:00:00+02:00",
        creditLimit=0,
        requestsPerMinute=1_000_000,
        routes=["/api/projects/", "/api/projects", "/v1/chat/", "/api"],
    )
    assert wanted.name == "ci"
    assert wanted.limits == KeyLimits(
        expires_at=datetime(2027, 1, 31, tzinfo=UTC),
        credit_limit=0,
        requests_per_minute=1_000_000,
        routes=("/api/projects", "/v1/chat", "/api"),
    )
    assert create(expiresAt="2027-01-31T00:00:00Z").limits.expires_at == datetime(
        2027, 1, 31, tzinfo=UTC
    )
    assert create(routes=["/"]).limits.routes == ("/",)
    assert create(creditLimit=10**12).limits.credit_limit == 10**12


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("name", "x" * 101, "'name' is too long"),
        ("name", "a\nb", "'name' must not contain control characters"),
        ("name", 5, "'name' must be a string"),
        ("expiresAt", "2027-01-31T00:00:00", "'expiresAt' needs a time zone"),
        ("expiresAt", "2027-01-31", "'expiresAt' needs a time zone"),
        ("expiresAt", "tomorrow", "'expiresAt' is not an ISO 8601 date-time"),
        ("expiresAt", 1_900_000_000, "'expiresAt' must be an ISO 8601 date-time string"),
        ("expiresAt", "2026-12-01T11:00:00Z", "'expiresAt' must be in the future"),
        ("expiresAt", "2026-12-01T12:00:00Z", "'expiresAt' must be in the future"),
        ("expiresAt", "9999-12-31T23:59:59-01:00", "'expiresAt' is out of range"),
        ("expiresAt", "0001-01-01T00:00:00+01:00", "'expiresAt' is out of range"),
        ("creditLimit", -1, "'creditLimit' must be between 0 and 1000000000000"),
        ("creditLimit", 10**12 + 1, "'creditLimit' must be between"),
        ("creditLimit", True, "'creditLimit' must be an integer"),
        ("creditLimit", 1.5, "'creditLimit' must be an integer"),
        ("creditLimit", "5", "'creditLimit' must be an integer"),
        ("requestsPerMinute", 0, "'requestsPerMinute' must be between 1 and 1000000"),
        ("requestsPerMinute", 1_000_001, "'requestsPerMinute' must be between"),
        ("requestsPerMinute", False, "'requestsPerMinute' must be an integer"),
        ("routes", "/api/projects/", "'routes' must be a list of 1 to 32"),
        ("routes", [], "'routes' must be a list of 1 to 32"),
        ("routes", ["/v1"] * 33, "'routes' must be a list of 1 to 32"),
        ("routes", [5], "'routes[0]' must be a string"),
        ("routes", ["/v1", "v1"], "'routes[1]' must start with '/'"),
        ("routes", ["/v1/" + "a" * 200], "'routes[0]' is too long"),
        ("routes", ["/v1/../admin"], "'routes[0]' must not hold '//' or '..'"),
        ("routes", ["/v1//x"], "'routes[0]' must not hold '//' or '..'"),
        ("routes", ["/v1?x=1"], "'routes[0]' must be a path, without a query"),
        ("routes", ["/v1#top"], "'routes[0]' must be a path, without a query"),
        ("routes", ["/v1 x"], "'routes[0]' holds characters a path cannot"),
        ("routes", ["/elsewhere"], "'routes[0]': '/elsewhere' is not under any proxied route"),
        ("routes", ["/ap"], "the routes are /api/projects/, /api/review/, /v1"),
        ("routes", ["/v10"], "'routes[0]': '/v10' is not under"),
    ],
)
def test_each_bad_field_is_named(field: str, value: object, words: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        create(**{field: value})
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        keyfields.key_changes({field: value}, ROUTES, now=NOW)


def test_unknown_fields_are_named() -> None:
    with pytest.raises(InvalidRequest, match="unknown field.*'credits'.*'limit'"):
        create(credits=5, limit=1)
    with pytest.raises(InvalidRequest, match="unknown field.*'secret'"):
        keyfields.key_changes({"secret": "x"}, ROUTES, now=NOW)


def test_changes_hold_only_the_given_fields_and_null_clears() -> None:
    later = (NOW + timedelta(days=1)).isoformat()
    changes = keyfields.key_changes(
        {"creditLimit": None, "routes": ["/v1/"], "expiresAt": later, "name": None},
        ROUTES,
        now=NOW,
    )
    assert changes == {
        "credit_limit": None,
        "routes": ("/v1",),
        "expires_at": NOW + timedelta(days=1),
        "name": None,
    }
    with pytest.raises(InvalidRequest, match="nothing to change"):
        keyfields.key_changes({}, ROUTES, now=NOW)


@pytest.mark.parametrize(
    ("prefix", "route", "overlap"),
    [
        ("/", "/api/projects/", True),
        ("/api", "/api/projects/", True),
        ("/api/projects", "/api/projects/", True),
        ("/api/projects/x/y", "/api/projects/", True),
        ("/api/proj", "/api/projects/", False),
        ("/api/projectsx", "/api/projects/", False),
        ("/x", "/", True),
    ],
)
def test_a_prefix_overlaps_a_route_above_or_below_it(
    prefix: str, route: str, overlap: bool
) -> None:
    accepted = True
    try:
        keyfields.allowed_routes([prefix], [route])
    except InvalidRequest:
        accepted = False
    assert accepted is overlap
