"""The OpenAPI document against what the app answers: every proxied answer the gateway gives
is documented with its status, error code and headers, and every documented required header
is sent. Driven in-process against a stub backend."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.accounts.keyfields import KeyLimits
from gateway.accounts.operations import CreatedKey, create_account, create_key
from gateway.admin.openapi import admin_paths
from gateway.app import create_app
from gateway.services import Services, open_services
from gateway.settings import Route, Settings, Tier
from gateway.web.openapi import HEADERS, openapi_document
from store.database import upgrade
from tests.support.stubs import serving

OWN_HEADERS = {name.lower() for name in HEADERS}


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/fail"):
            return web.json_response({"error": "backend broke"}, status=500)
        if request.path.endswith("/slow"):
            await asyncio.sleep(2)
        return web.json_response({"ok": True, "usage": {"total_tokens": 42}})

    async with serving(answer) as url:
        yield url


@pytest.fixture
async def services(
    tmp_path: Path, redis_url: str, backend: str, real_redis: aioredis.Redis
) -> AsyncIterator[Services]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    store = f"sqlite:///{tmp_path}/store.db"
    upgrade(store)
    settings = Settings.load(
        redis_url=redis_url,
        database_url=store,
        upstream_timeout=0.5,
        tiers={"tiny": Tier(credits=100, requests_per_minute=1)},
        routes=[
            Route(prefix="/api/projects/", upstream=backend),
            Route(prefix="/api/costly/", upstream=backend, cost=50),
            Route(prefix="/api/dead/", upstream=f"http://127.0.0.1:{closed}"),
            Route(prefix="/oa/projects/", upstream=backend, errors="openai"),
            Route(prefix="/oa/costly/", upstream=backend, cost=50, errors="openai"),
            Route(prefix="/oa/dead/", upstream=f"http://127.0.0.1:{closed}", errors="openai"),
        ],
    )
    built = open_services(settings)
    yield built
    await built.close()


def documented(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    template = next(t for t in document["paths"] if path.startswith(t.removesuffix("{path}")))
    answers = document["paths"][template][method.lower()]["responses"]
    if str(status) in answers:
        found: dict[str, Any] = answers[str(status)]
        return found
    return answers["2XX"] if 200 <= status < 300 else answers["default"]


def error_codes(schema: dict[str, Any]) -> set[str]:
    if "oneOf" in schema:
        return set().union(*(error_codes(s) for s in schema["oneOf"]))
    if "allOf" in schema and "properties" not in schema:
        return set().union(*(error_codes(s) for s in schema["allOf"]))
    error = schema.get("properties", {}).get("error", {})
    named = error.get("enum") or error.get("properties", {}).get("code", {}).get("enum", [])
    return set(named) | set().union(*(error_codes(s) for s in schema.get("allOf", [])))


def check(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    spec = documented(document, path, method, response.status_code)
    headers = {name.lower(): header for name, header in spec.get("headers", {}).items()}
    for name, header in headers.items():
        if header["required"]:
            assert name in response.headers, (response.status_code, name)
    for name in response.headers:
        if name in OWN_HEADERS:
            assert name in headers, (response.status_code, name, "sent but not documented")
    if "content" in spec:
        error = response.json()["error"]
        code = error["code"] if isinstance(error, dict) else error  # OpenAI's shape, or ours
        assert code in error_codes(spec["content"]["application/json"]["schema"]), code


def error_code(response: httpx.Response) -> str:
    """The gateway's error code in the contract's shape; OpenAI's code in OpenAI's."""
    error = response.json().get("error", "")
    return str(error["code"] if isinstance(error, dict) else error)


@pytest.mark.parametrize("family", ["api", "oa"])
async def test_every_proxied_answer_is_documented(services: Services, family: str) -> None:
    """On routes with the contract's errors (``/api/``) and with OpenAI's (``/oa/``)."""
    app = create_app(services.settings, services=services)
    document = openapi_document(services.settings, admin_paths())
    pro = await create_account(services, tier="pro", months=1)
    free = await create_account(services, tier="free")
    tiny = await create_account(services, tier="tiny", months=1)
    past = datetime.now(UTC) - timedelta(days=1)

    async def key(**limits: Any) -> CreatedKey:
        return await create_key(services, pro.account_id, limits=KeyLimits(**limits))

    capped, paced = await key(credit_limit=1), await key(requests_per_minute=1)
    narrow, old = await key(routes=("/api/costly", "/oa/costly")), await key(expires_at=past)
    calls = [
        (pro, "POST", "/api/projects/ok", {}, 200),
        (pro, "POST", "/api/projects/fail", {}, 500),
        (pro, "POST", "/api/projects/ok", {"Idempotency-Key": "k" * 300}, 400),
        (None, "POST", "/api/projects/ok", {}, 401),
        (pro, "POST", "/api/projects/ok", {"Idempotency-Key": "once"}, 200),
        (pro, "POST", "/api/projects/ok", {"Idempotency-Key": "once"}, 200),
        (pro, "POST", "/api/projects/other", {"Idempotency-Key": "once"}, 422),
        (free, "POST", "/api/costly/ok", {}, 429),
        (tiny, "POST", "/api/projects/ok", {}, 200),
        (tiny, "POST", "/api/projects/ok", {}, 429),
        (pro, "POST", "/api/dead/x", {}, 502),
        (pro, "POST", "/api/projects/slow", {}, 504),
        (capped, "POST", "/api/projects/ok", {}, 200),
        (capped, "POST", "/api/projects/ok", {}, 429),
        (paced, "POST", "/api/projects/ok", {}, 200),
        (paced, "POST", "/api/projects/ok", {}, 429),
        (narrow, "POST", "/api/projects/ok", {}, 403),
        (old, "POST", "/api/projects/ok", {}, 401),
    ]
    seen: set[tuple[int, str]] = set()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for account, method, path, headers, status in calls:
                path = path.replace("/api/", f"/{family}/", 1)
                if "Idempotency-Key" in headers:
                    headers = {"Idempotency-Key": f"{family}-{headers['Idempotency-Key']}"}
                key = account.api_key if account else "cg_" + "u" * 43
                sent = {"Authorization": f"Bearer {key}", **headers}
                response = await client.request(method, path, headers=sent, json={})
                assert response.status_code == status, (path, response.text)
                check(document, method, path, response)
                if status >= 400 and response.headers.get("content-type") == "application/json":
                    seen.add((status, error_code(response)))
    assert (429, "key_credit_limit") in seen and (429, "key_rate_limited") in seen
    assert (403, "route_not_allowed") in seen and (401, "key_expired") in seen
    if family == "api":
        assert (429, "insufficient_credits") in seen and (429, "rate_limited") in seen
    else:
        assert (429, "insufficient_quota") in seen and (429, "rate_limit_exceeded") in seen
        assert (401, "invalid_api_key") in seen and (502, "bad_gateway") in seen


def test_every_operation_documents_the_refusals_of_oversized_heads() -> None:
    document = openapi_document(Settings.load(), admin_paths())
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert operations
    for op in operations:
        assert {"414", "431"} <= set(op["responses"]), op["summary"]
    assert document["components"]["responses"]["E431"]["description"].startswith(
        "request_header_fields_too_large: "
    )
