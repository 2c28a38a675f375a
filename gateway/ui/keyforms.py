"""A key's name and limits as the pages' forms send them, turned into the JSON fields that
``gateway.accounts.keyfields`` checks, so a page refuses what the APIs refuse, in the same
words.

Pure: form strings in, a body out (and back: a key's limits as a form's values). An empty
field does not limit (null); the expiry is an HTML ``datetime-local`` value (no zone), read
as UTC; the routes are the checked configured routes plus any prefixes typed in
``more_routes`` (space or comma separated). An edit form sends every field, so a change sets
them all: a field emptied clears that limit.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store.records import ApiKeyRecord
from store.timefmt import as_utc

LOCAL_MINUTE = "%Y-%m-%dT%H:%M"
"""What a ``datetime-local`` input shows and sends (to the minute)."""
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class KeyForm:
    """What a key form shows: its fields' values, and which configured routes are checked."""

    name: str = ""
    expires_at: str = ""
    credit_limit: str = ""
    requests_per_minute: str = ""
    routes: frozenset[str] = field(default_factory=frozenset)
    more_routes: str = ""


def key_body(fields: Mapping[str, str], checked: Sequence[str]) -> dict[str, Any]:
    """The JSON fields of ``keyfields.create_key`` / ``key_changes`` from a posted form;
    ``checked``: the values of its ``routes`` checkboxes."""
    return {
        "name": fields.get("name", "").strip() or None,
        "expiresAt": _moment(fields.get("expires_at", "")),
        "creditLimit": _number(fields.get("credit_limit", "")),
        "requestsPerMinute": _number(fields.get("requests_per_minute", "")),
        "routes": _routes(checked, fields.get("more_routes", "")),
    }


def form_of(fields: Mapping[str, str], checked: Sequence[str]) -> KeyForm:
    """A posted form's values, to show it again next to its error."""
    return KeyForm(
        name=fields.get("name", ""),
        expires_at=fields.get("expires_at", ""),
        credit_limit=fields.get("credit_limit", ""),
        requests_per_minute=fields.get("requests_per_minute", ""),
        routes=frozenset(_bare(r) for r in checked),
        more_routes=fields.get("more_routes", ""),
    )


def key_form(key: ApiKeyRecord, configured: Collection[str]) -> KeyForm:
    """A key's name and limits as its edit form shows them; its routes that are configured
    routes as checked boxes, the others typed."""
    boxes = {_bare(r) for r in configured}
    routes = key.routes or ()
    return KeyForm(
        name=key.name or "",
        expires_at=as_utc(key.expires_at).strftime(LOCAL_MINUTE) if key.expires_at else "",
        credit_limit="" if key.credit_limit is None else str(key.credit_limit),
        requests_per_minute="" if key.requests_per_minute is None else str(key.requests_per_minute),
        routes=frozenset(r for r in routes if r in boxes),
        more_routes=" ".join(r for r in routes if r not in boxes),
    )


def route_box(route: str) -> str:
    """A configured route as its checkbox compares it (a key's routes have no trailing /)."""
    return _bare(route)


def _bare(route: str) -> str:
    return route.rstrip("/") or "/"


def _number(text: str) -> object:
    """An integer, None when empty; any other text as it is, for keyfields to name."""
    text = text.strip()
    if not text:
        return None
    digits = text.removeprefix("-")
    return int(text) if digits.isascii() and digits.isdigit() else text


def _moment(text: str) -> str | None:
    """An ISO 8601 date-time with a zone; a value without one is UTC. Unreadable text is
    passed on as it is, for keyfields to name."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _routes(checked: Sequence[str], typed: str) -> list[str] | None:
    routes = [r for r in checked if r] + [r for r in _SEPARATORS.split(typed) if r]
    return routes or None
