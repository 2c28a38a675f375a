"""Plain helpers of the admin tests (fixtures live in conftest.py beside this)."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from gateway.admin.routes import admin_routes
from gateway.services import Services

ADMIN_TOKEN = "test-admin-token-0123456789"


def admin_app(services: Services) -> Starlette:
    """Just the /admin mount over given Services (the full app is tested in e2e)."""
    app = Starlette(routes=[Mount("/admin", routes=admin_routes())])
    app.state.services = services
    return app


def admin_client(services: Services, **options: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=admin_app(services))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return httpx.AsyncClient(
        transport=transport, base_url="http://gateway.test", headers=headers, **options
    )


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    """The contract's error body, with ``words`` in its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"] == code
    for word in words:
        assert word in body["message"]
