"""Strict checks of what operators send, shared by the admin API and the CLI.

Every check raises ``InvalidRequest`` naming the field and the problem, so both front ends
answer with the same words. Booleans are not integers here, though Python says they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest

MAX_ACCOUNT_ID = 64
ACCOUNT_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ACCOUNT_ID - 1}}}$")
"""Ids end up inside Redis keys: no ``|``, braces, colons or spaces (gateway/credits/keys.py)."""
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LEDGER_CURSOR = re.compile(r"^[0-9]{1,3}-[0-9]{1,20}-[0-9]{1,20}$")
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY = re.compile(rf"^[ -~]{{1,{MAX_IDEMPOTENCY_KEY}}}$")
"""The contract's Idempotency-Key: 1 to 255 printable ASCII characters."""
"""A ledger entry's event id, ``<bucket>-<stream id>``: the ledger's paging cursor."""
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_EMAIL = 254
MAX_CREDITS = 1_000_000
MAX_REASON = 500
MAX_KEY_NAME = 100
MIN_MONTHS, MAX_MONTHS = 1, 36
MAX_JSON_DEPTH = 8


@dataclass(frozen=True, slots=True)
class CreateAccount:
    account_id: str | None
    email: str | None
    tier: str
    months: int
    reason: str


@dataclass(frozen=True, slots=True)
class Upgrade:
    tier: str
    months: int
    reason: str


@dataclass(frozen=True, slots=True)
class Renew:
    months: int
    reason: str


@dataclass(frozen=True, slots=True)
class Downgrade:
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    credits: int
    reason: str


def json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is an empty object. Nesting deeper
    than ``MAX_JSON_DEPTH`` is refused (no operation takes more than a flat object)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("body must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: object) -> int:
    """How deep containers nest in a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def only_fields(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        raise InvalidRequest(f"unknown field(s) {names}; allowed: {', '.join(sorted(allowed))}")


def _integer(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"field '{field}' must be an integer")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{field}' must be a string")
    return value


def _text_line(value: object, field: str) -> str:
    """A string without control characters: they end up in the store, where PostgreSQL
    refuses NUL outright (and a ledger note it refuses would stall the sync). Nor lone
    surrogates (JSON's ``"\\ud800"``): no UTF-8 holds them, so Redis and the store can't."""
    text = _string(value, field)
    if _CONTROL.search(text):
        raise InvalidRequest(f"field '{field}' must not contain control characters")
    if _SURROGATE.search(text):
        raise InvalidRequest(f"field '{field}' must be valid Unicode text (a lone surrogate)")
    return text


def account_id(value: object, field: str = "id") -> str:
    text = _string(value, field)
    if len(text) > MAX_ACCOUNT_ID:
        raise InvalidRequest(f"field '{field}' is too long: at most {MAX_ACCOUNT_ID} characters")
    if not ACCOUNT_ID.fullmatch(text):
        raise InvalidRequest(
            f"field '{field}' must start with a letter or digit and hold only letters, "
            "digits, '.', '_' or '-'"
        )
    return text


def key_id(value: object, field: str = "keyId") -> str:
    text = _string(value, field)
    if not KEY_ID.fullmatch(text):
        raise InvalidRequest(f"field '{field}' is not a key id")
    return text


def ledger_cursor(value: object, field: str = "before") -> str:
    text = _string(value, field)
    if not LEDGER_CURSOR.fullmatch(text):
        raise InvalidRequest(f"query '{field}' is not a ledger cursor (the 'next' of a page)")
    return text


def idempotency_key(value: str, field: str = "Idempotency-Key") -> str:
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return value


def tier(value: object, tiers: Collection[str], *, paid: bool, field: str = "tier") -> str:
    name = _string(value, field)
    if name not in tiers:
        raise InvalidRequest(f"field '{field}': unknown tier {name!r}; one of {_names(tiers)}")
    if paid and name == "free":
        raise InvalidRequest(f"field '{field}': cannot upgrade to 'free'; use downgrade")
    return name


def months(value: object, field: str = "months") -> int:
    number = _integer(value, field)
    if not MIN_MONTHS <= number <= MAX_MONTHS:
        raise InvalidRequest(f"field '{field}' must be between {MIN_MONTHS} and {MAX_MONTHS}")
    return number


def credits(value: object, field: str = "credits") -> int:
    number = _integer(value, field)
    if not 1 <= number <= MAX_CREDITS:
        raise InvalidRequest(f"field '{field}' must be between 1 and {MAX_CREDITS}")
    return number


def reason(value: object, *, required: bool, field: str = "reason") -> str:
    if value is None and not required:
        return ""
    if value is None:
        raise InvalidRequest(f"field '{field}' is required")
    text = _text_line(value, field).strip()
    if not text:
        raise InvalidRequest(f"field '{field}' must not be empty")
    if len(text) > MAX_REASON:
        raise InvalidRequest(f"field '{field}' is too long: at most {MAX_REASON} characters")
    return text


def email(value: object, field: str = "email") -> str:
    text = _text_line(value, field).strip()
    if len(text) > MAX_EMAIL or not EMAIL.fullmatch(text):
        raise InvalidRequest(f"field '{field}' is not an email address")
    return text


def key_name(value: object, field: str = "name") -> str:
    text = _text_line(value, field).strip()
    if len(text) > MAX_KEY_NAME:
        raise InvalidRequest(f"field '{field}' is too long: at most {MAX_KEY_NAME} characters")
    return text


def create_account(body: Mapping[str, Any], tiers: Collection[str]) -> CreateAccount:
    only_fields(body, ("id", "email", "tier", "months", "reason"))
    chosen = "free" if body.get("tier") is None else tier(body["tier"], tiers, paid=False)
    span = 0
    if body.get("months") is not None:
        span = months(body["months"])
        if chosen == "free":
            raise InvalidRequest("field 'months' needs a paid tier")
    return CreateAccount(
        account_id=None if body.get("id") is None else account_id(body["id"]),
        email=None if body.get("email") is None else email(body["email"]),
        tier=chosen,
        months=span,
        reason=reason(body.get("reason"), required=False),
    )


def upgrade(body: Mapping[str, Any], tiers: Collection[str]) -> Upgrade:
    only_fields(body, ("tier", "months", "reason"))
    _require(body, "tier", "months")
    return Upgrade(
        tier=tier(body["tier"], tiers, paid=True),
        months=months(body["months"]),
        reason=reason(body.get("reason"), required=False),
    )


def renew(body: Mapping[str, Any]) -> Renew:
    only_fields(body, ("months", "reason"))
    _require(body, "months")
    return Renew(months=months(body["months"]), reason=reason(body.get("reason"), required=False))


def downgrade(body: Mapping[str, Any]) -> Downgrade:
    only_fields(body, ("reason",))
    return Downgrade(reason=reason(body.get("reason"), required=False))


def grant(body: Mapping[str, Any]) -> Grant:
    only_fields(body, ("credits", "reason"))
    _require(body, "credits", "reason")
    return Grant(credits=credits(body["credits"]), reason=reason(body["reason"], required=True))


def _require(body: Mapping[str, Any], *names: str) -> None:
    missing = [n for n in names if body.get(n) is None]
    if missing:
        raise InvalidRequest(f"field '{missing[0]}' is required")


def _names(tiers: Collection[str]) -> str:
    return ", ".join(sorted(tiers))
