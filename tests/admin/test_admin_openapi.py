"""The OpenAPI document stays true: every route documented, every answer documented.

Requests here are a fixed table of happy and bad inputs per admin operation; the random
exploration (schemathesis on a real server) is tests/e2e/test_admin_fuzz.py.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from starlette.routing import BaseRoute, Mount, Route

from gateway.admin.openapi import admin_paths
from gateway.app import create_app
from gateway.services import Services
from gateway.web.openapi import openapi_document
from tests.support.admin import ADMIN_TOKEN
from tests.support.documented import CHECKS, operation_of

JSON = dict[str, Any]
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def shape(path: str) -> str:
    """A path with its parameters unnamed, so /a/{id} and /a/{account_id} compare equal."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def app_routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= app_routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and ":path}" not in route.path and route.include_in_schema:
            # (not in the schema: the HTML pages, /dashboard and /admin/ui)
            for method in (route.methods or set()) & METHODS:
                found.add((method, shape(prefix + route.path)))
    return found


def test_every_route_of_the_app_is_documented(services: Services) -> None:
    settings = services.settings
    app = create_app(settings, services=services)
    document = openapi_document(settings, admin_paths())
    documented = {
        (method.upper(), shape(path)) for path, item in document["paths"].items() for method in item
    }
    served = app_routes(list(app.routes))
    assert served, "the app has routes"
    assert served <= documented, served - documented
    for route in settings.routes:
        assert ("POST", shape(route.prefix + "{path}")) in documented
    # Nothing documented that the app does not serve (proxied prefixes are middleware).
    proxied = {shape(r.prefix + "{path}") for r in settings.routes}
    assert {p for _, p in documented} - proxied == {p for _, p in served}


async def test_the_document_is_served_without_auth(services: Services) -> None:
    app = create_app(services.settings, services=services)
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert sorted(document["components"]["schemas"]["Tier"]["enum"]) == sorted(
        services.settings.tiers
    )
    schemathesis.openapi.from_dict(document)  # loads: a well-formed document


# (method, path, body) per admin operation: happy first, then bad inputs. "{id}" is an
# account that exists, "{key}" one of its keys.
CASES: list[tuple[str, str, Any]] = [
    ("POST", "/admin/accounts", {"tier": "pro", "months": 2}),
    ("POST", "/admin/accounts", {"id": "{id}"}),
    ("POST", "/admin/accounts", {"tier": "gold"}),
    ("POST", "/admin/accounts", [1]),
    ("GET", "/admin/accounts", None),
    ("GET", "/admin/accounts?limit=0", None),
    ("GET", "/admin/accounts/{id}", None),
    ("GET", "/admin/accounts/ghost", None),
    ("GET", "/admin/accounts/a%7Cb", None),
    ("POST", "/admin/accounts/{id}/keys", {"name": "n"}),
    ("POST", "/admin/accounts/ghost/keys", {}),
    ("POST", "/admin/accounts/{id}/keys", {"x": 1}),
    ("GET", "/admin/accounts/{id}/keys", None),
    ("GET", "/admin/accounts/ghost/keys", None),
    (
        "POST",
        "/admin/accounts/{id}/keys",
        {"creditLimit": 5, "routes": ["/api/projects/"], "expiresAt": "2099-01-01T00:00:00Z"},
    ),
    ("POST", "/admin/accounts/{id}/keys", {"routes": ["/elsewhere"]}),
    ("PATCH", "/admin/accounts/{id}/keys/{key}", {"creditLimit": None, "requestsPerMinute": 3}),
    ("PATCH", "/admin/accounts/{id}/keys/{key}", {"creditLimit": -1}),
    ("PATCH", "/admin/accounts/{id}/keys/{key}", {}),
    ("PATCH", "/admin/accounts/{id}/keys/key_nope", {"name": "x"}),
    ("DELETE", "/admin/accounts/{id}/keys/{key}", None),
    ("DELETE", "/admin/accounts/{id}/keys/key_nope", None),
    ("PATCH", "/admin/accounts/{id}/keys/{key}", {"name": "x"}),
    ("POST", "/admin/accounts/{id}/grant", {"credits": 3, "reason": "r"}),
    ("POST", "/admin/accounts/{id}/grant", {"credits": 0, "reason": "r"}),
    ("POST", "/admin/accounts/ghost/grant", {"credits": 3, "reason": "r"}),
    ("POST", "/admin/accounts/{id}/renew", {"months": 1}),
    ("POST", "/admin/accounts/{id}/upgrade", {"tier": "pro", "months": 1}),
    ("POST", "/admin/accounts/{id}/upgrade", {"tier": "free", "months": 1}),
    ("POST", "/admin/accounts/ghost/upgrade", {"tier": "pro", "months": 1}),
    ("POST", "/admin/accounts/{id}/renew", {"months": 1}),
    ("POST", "/admin/accounts/{id}/renew", {"months": 99}),
    ("POST", "/admin/accounts/{id}/downgrade", {"reason": "r"}),
    ("POST", "/admin/accounts/{id}/downgrade", {"tier": "free"}),
    ("POST", "/admin/accounts/ghost/downgrade", None),
    ("GET", "/admin/accounts/{id}/ledger", None),
    ("GET", "/admin/accounts/{id}/ledger?limit=500", None),
    ("GET", "/admin/accounts/ghost/ledger", None),
]


@pytest.mark.parametrize("authorized", [True, False])
async def test_admin_answers_only_documented_statuses_and_shapes(
    services: Services, authorized: bool
) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document(services.settings, admin_paths()))
    app = create_app(services.settings, services=services)
    app.state.services = services
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN if authorized else 'nope'}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=headers
    ) as client:
        made = await client.post("/admin/accounts", json={"id": "doc-1"})
        key = made.json().get("keyId", "key_x") if authorized else "key_x"
        statuses = set()
        for method, template, body in CASES:
            path = template.replace("{id}", "doc-1").replace("{key}", key)
            response = await client.request(method, path, json=body)
            statuses.add(response.status_code)
            op, params = operation_of(schema, method, path)
            assert str(response.status_code) in op.definition.raw["responses"], (method, path)
            op.Case(path_parameters=params).validate_response(response, checks=CHECKS)
    expected = {200, 201, 400, 404, 409} if authorized else {401}
    assert statuses == expected


async def test_idempotent_answers_are_documented(services: Services) -> None:
    """A first answer, its replay (no apiKey), a reused key (422) and a malformed one (400)."""
    schema = schemathesis.openapi.from_dict(openapi_document(services.settings, admin_paths()))
    app = create_app(services.settings, services=services)
    app.state.services = services
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    cases: list[tuple[str, str, Any, str, int]] = [
        ("POST", "/admin/accounts", {"id": "doc-i"}, "create-1", 201),
        ("POST", "/admin/accounts", {"id": "doc-i"}, "create-1", 201),
        ("POST", "/admin/accounts", {"id": "doc-j"}, "create-1", 422),
        ("POST", "/admin/accounts/doc-i/grant", {"credits": 1, "reason": "r"}, "g-1", 200),
        ("POST", "/admin/accounts/doc-i/grant", {"credits": 1, "reason": "r"}, "g-1", 200),
        ("POST", "/admin/accounts/doc-i/keys", {}, "k-1", 201),
        ("POST", "/admin/accounts/doc-i/keys", {}, "k-1", 201),
        ("POST", "/admin/accounts/doc-i/downgrade", {}, "k" * 256, 400),
    ]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=headers
    ) as client:
        for method, path, body, key, status in cases:
            response = await client.request(
                method, path, json=body, headers={"Idempotency-Key": key}
            )
            assert response.status_code == status, (path, response.text)
            op, params = operation_of(schema, method, path)
            assert str(status) in op.definition.raw["responses"], (method, path)
            op.Case(path_parameters=params).validate_response(response, checks=CHECKS)
