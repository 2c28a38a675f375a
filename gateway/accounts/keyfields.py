"""What a request may say of an API key: its name and its own limits, checked in one place.

The admin API, the CLI and the account holder's ``/api/user/keys`` read the same JSON fields
(``name``, ``expiresAt``, ``creditLimit``, ``requestsPerMinute``, ``routes``) through these
checks, so each answers a bad field with the same 400 ``invalid_request`` naming it. A create
takes the fields it is given (absent or null: no limit); a change (PATCH) changes only the
fields given, null clearing a limit. ``routes`` must overlap the configured proxied routes: a
key limited to a path no route serves could call nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.accounts import validation
from gateway.errors import InvalidRequest
from gateway.settings import Settings
from store.timefmt import as_utc

MAX_CREDIT_LIMIT = 10**12
MIN_RPM, MAX_RPM = 1, 1_000_000
MAX_ROUTES = 32
MAX_ROUTE = 200
_PATH_CHARACTERS = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
"""A path's characters (RFC 3986 pchar and "/"); no query, fragment, space or control."""

FIELDS = {
    "name": "name",
    "expiresAt": "expires_at",
    "creditLimit": "credit_limit",
    "requestsPerMinute": "requests_per_minute",
    "routes": "routes",
}
"""The JSON fields, and the store's names of them (``store.records.KEY_CHANGES``)."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's own limits; None: that one does not limit."""

    expires_at: datetime | None = None
    credit_limit: int | None = None
    requests_per_minute: int | None = None
    routes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CreateKey:
    name: str
    limits: KeyLimits


KeyChanges = Mapping[str, object]
"""What a PATCH changes, by the store's field names (``store.repository.update_api_key``)."""


def create_key(body: Mapping[str, Any], routes: Collection[str], *, now: datetime) -> CreateKey:
    """The fields of a new key; ``routes``: the configured proxied prefixes."""
    validation.only_fields(body, FIELDS)

    def given(field: str) -> Any:
        return _checked(field, body.get(field), routes, now)

    return CreateKey(
        name=given("name") or "",
        limits=KeyLimits(
            expires_at=given("expiresAt"),
            credit_limit=given("creditLimit"),
            requests_per_minute=given("requestsPerMinute"),
            routes=given("routes"),
        ),
    )


def key_changes(body: Mapping[str, Any], routes: Collection[str], *, now: datetime) -> KeyChanges:
    """The changes a PATCH asks for: only the fields given; null clears (a name: to none)."""
    validation.only_fields(body, FIELDS)
    if not body:
        raise InvalidRequest(f"nothing to change: give one of {', '.join(FIELDS)}")
    return {FIELDS[field]: _checked(field, body[field], routes, now) for field in body}


def _checked(field: str, value: object, routes: Collection[str], now: datetime) -> object:
    if value is None:
        return None
    if field == "name":
        return validation.key_name(value, field)
    if field == "expiresAt":
        return expires_at(value, now=now)
    if field == "creditLimit":
        return credit_limit(value)
    if field == "requestsPerMinute":
        return requests_per_minute(value)
    return allowed_routes(value, routes)


def expires_at(value: object, *, now: datetime, field: str = "expiresAt") -> datetime:
    """An ISO 8601 date-time with a zone (``Z`` or an offset), later than ``now``."""
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{field}' must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(
            f"field '{field}' is not an ISO 8601 date-time: {value[:40]!r}"
        ) from exc
    if moment.tzinfo is None:
        raise InvalidRequest(
            f"field '{field}' needs a time zone (e.g. 2027-01-31T00:00:00Z): {value[:40]!r}"
        )
    try:
        moment = as_utc(moment)
    except OverflowError as exc:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise InvalidRequest(f"field '{field}' is out of range: {value[:40]!r}") from exc
    if moment <= now:
        raise InvalidRequest(f"field '{field}' must be in the future")
    return moment


def credit_limit(value: object, field: str = "creditLimit") -> int:
    return _bounded(value, field, 0, MAX_CREDIT_LIMIT)


def requests_per_minute(value: object, field: str = "requestsPerMinute") -> int:
    return _bounded(value, field, MIN_RPM, MAX_RPM)


def _bounded(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"field '{field}' must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"field '{field}' must be between {low} and {high}")
    return value


def allowed_routes(
    value: object, configured: Collection[str], field: str = "routes"
) -> tuple[str, ...]:
    """Path prefixes a key may call: 1 to ``MAX_ROUTES`` plain paths, a trailing "/" dropped
    (``/v1`` allows ``/v1`` and ``/v1/...``), duplicates dropped, each overlapping a route."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ROUTES:
        raise InvalidRequest(f"field '{field}' must be a list of 1 to {MAX_ROUTES} path prefixes")
    prefixes: list[str] = []
    for index, item in enumerate(value):
        prefix = route_prefix(item, f"{field}[{index}]")
        if not any(_overlap(prefix, route) for route in configured):
            raise InvalidRequest(
                f"field '{field}[{index}]': {prefix!r} is not under any proxied route; "
                f"the routes are {', '.join(sorted(configured))}"
            )
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes)


def route_prefix(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{field}' must be a string")
    if not value.startswith("/"):
        raise InvalidRequest(f"field '{field}' must start with '/'")
    if len(value) > MAX_ROUTE:
        raise InvalidRequest(f"field '{field}' is too long: at most {MAX_ROUTE} characters")
    if "?" in value or "#" in value:
        raise InvalidRequest(f"field '{field}' must be a path, without a query or fragment")
    if "//" in value or ".." in value:
        raise InvalidRequest(f"field '{field}' must not hold '//' or '..'")
    if not _PATH_CHARACTERS.fullmatch(value):
        raise InvalidRequest(f"field '{field}' holds characters a path cannot")
    return value.rstrip("/") or "/"


def _overlap(prefix: str, route: str) -> bool:
    """True when a path under ``prefix`` can be a path of ``route``: one is under the other."""
    base = route.rstrip("/") or "/"
    if prefix == "/" or base == "/" or prefix == base:
        return True
    return base.startswith(prefix + "/") or prefix.startswith(base + "/")


def configured_routes(settings: Settings) -> list[str]:
    """The proxied prefixes a key's ``routes`` must overlap."""
    return [route.prefix for route in settings.routes]
