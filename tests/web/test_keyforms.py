"""The key forms, pure: form strings to the JSON fields keyfields checks, and a key back to
its edit form's values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.accounts import keyfields
from gateway.errors import InvalidRequest
from gateway.ui.keyforms import KeyForm, form_of, key_body, key_form
from store.records import ApiKeyRecord

ROUTES = ["/api/projects/", "/api/review/"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_empty_fields_do_not_limit() -> None:
    body = key_body({"name": " ", "credit_limit": "", "expires_at": ""}, [])
    assert body == dict.fromkeys(
        ("name", "expiresAt", "creditLimit", "requestsPerMinute", "routes")
    )
    wanted = keyfields.create_key(body, ROUTES, now=NOW)
    assert (wanted.name, wanted.limits) == ("", keyfields.KeyLimits())


def test_filled_fields_become_the_apis_values() -> None:
    fields = {
        "name": "ci",
        "expires_at": "2027-01-31T12:30",
        "credit_limit": "10",
        "requests_per_minute": "30",
        "more_routes": "/api/projects/lint, /api/review/x",
    }
    wanted = keyfields.create_key(key_body(fields, ["/api/review/"]), ROUTES, now=NOW)
    assert wanted.limits == keyfields.KeyLimits(
        expires_at=datetime(2027, 1, 31, 12, 30, tzinfo=UTC),
        credit_limit=10,
        requests_per_minute=30,
        routes=("/api/review", "/api/projects/lint", "/api/review/x"),
    )


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("credit_limit", "1.5", "field 'creditLimit' must be an integer"),
        ("credit_limit", "-1", "field 'creditLimit' must be between 0"),
        ("requests_per_minute", "²", "field 'requestsPerMinute' must be an integer"),
        ("expires_at", "tomorrow", "field 'expiresAt' is not an ISO 8601 date-time"),
        ("expires_at", "2026-11-30T00:00", "field 'expiresAt' must be in the future"),
        ("more_routes", "api", "field 'routes[0]' must start with '/'"),
    ],
)
def test_a_bad_field_is_named_as_the_api_names_it(field: str, value: str, said: str) -> None:
    with pytest.raises(InvalidRequest, match=said.replace("[", r"\[").replace("]", r"\]")):
        keyfields.create_key(key_body({field: value}, []), ROUTES, now=NOW)


def test_a_keys_edit_form_shows_its_limits_and_a_sent_form_its_values() -> None:
    key = ApiKeyRecord(
        key_id="key_1",
        account_id="acme",
        key_hash="h",
        display_prefix="cg_ab",
        name=None,
        created_at=NOW,
        revoked_at=None,
        last_used_at=None,
        expires_at=datetime(2027, 1, 31, 12, 30, 59, tzinfo=UTC),
        credit_limit=0,
        routes=("/api/review", "/api/projects/lint"),
    )
    assert key_form(key, ROUTES) == KeyForm(
        expires_at="2027-01-31T12:30",
        credit_limit="0",
        routes=frozenset({"/api/review"}),
        more_routes="/api/projects/lint",
    )
    sent = form_of({"name": "x", "credit_limit": "-1"}, ["/api/projects/"])
    assert (sent.name, sent.credit_limit, sent.routes) == ("x", "-1", frozenset({"/api/projects"}))
