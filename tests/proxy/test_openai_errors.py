"""Routes with ``errors = "openai"``: the gateway's own errors in OpenAI's shape, with the same
statuses and headers as on the contract's routes, in-process against the stub backend."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.errors import error_body, openai_error_body
from gateway.services import Services
from gateway.settings import Route, Settings, Tier
from tests.support.recording import gateway_client
from tests.support.stores import in_process_settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, stub: str) -> Settings:
    """The conftest's settings, with an OpenAI-shaped route, a contract one to compare, a dead
    OpenAI-shaped one and a tier of one request a minute."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    return in_process_settings(
        tmp_path,
        redis_url,
        tiers={"slow": Tier(credits=100, requests_per_minute=1)},
        routes=[
            Route(prefix="/v1/", upstream=stub, errors="openai"),
            Route(prefix="/api/projects/", upstream=stub),
            Route(prefix="/dead/", upstream=f"http://127.0.0.1:{closed}", errors="openai"),
        ],
    )


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(create_app(settings, services=services)) as http:
        yield http


def openai_error(response: httpx.Response) -> dict[str, Any]:
    document = response.json()
    assert "success" not in document
    error: dict[str, Any] = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["param"] is None
    return error


async def test_insufficient_credits_is_insufficient_quota_not_to_be_retried(
    client: httpx.AsyncClient, services: Services
) -> None:
    free = await create_account(services, tier="free")
    auth = {"Authorization": f"Bearer {free.api_key}"}
    for _ in range(5):
        assert (await client.post("/v1/chat", headers=auth, json={})).status_code == 200
    refused = await client.post("/v1/chat", headers=auth, json={})
    twin = await client.post("/api/projects/chat", headers=auth, json={})
    assert refused.status_code == twin.status_code == 429
    error = openai_error(refused)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert error["message"] == twin.json()["message"]
    assert refused.json()["creditInfo"] == twin.json()["creditInfo"]
    assert refused.headers["x-should-retry"] == "false"
    for name in ("retry-after", "ratelimit", "ratelimit-policy"):
        assert refused.headers[name] == twin.headers[name]


async def test_rate_limited_is_rate_limit_exceeded(
    client: httpx.AsyncClient, services: Services
) -> None:
    slow = await create_account(services, tier="slow", months=1)
    auth = {"Authorization": f"Bearer {slow.api_key}"}
    assert (await client.post("/v1/chat", headers=auth, json={})).status_code == 200
    refused = await client.post("/v1/chat", headers=auth, json={})
    assert refused.status_code == 429
    error = openai_error(refused)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert refused.headers["x-should-retry"] == "true"
    assert int(refused.headers["retry-after"]) >= 1


async def test_unauthorized_bad_input_and_backend_failures(
    client: httpx.AsyncClient, services: Services
) -> None:
    unknown = await client.post("/v1/chat", headers={"Authorization": "Bearer cg_" + "x" * 40})
    assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
    assert openai_error(unknown)["code"] == "invalid_api_key"

    pro = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {pro.api_key}"}
    bad_key = await client.post("/v1/chat", headers={**auth, "Idempotency-Key": "k" * 300})
    assert bad_key.status_code == 400
    assert openai_error(bad_key)["type"] == "invalid_request_error"
    climbing = await client.get("/v1/%2e%2e/admin/accounts", headers=auth)
    assert climbing.status_code == 400
    assert openai_error(climbing)["code"] == "invalid_request"

    dead = await client.post("/dead/chat", headers=auth, json={})
    assert dead.status_code == 502 and dead.headers["x-credits-charged"] == "0"
    assert (openai_error(dead)["type"], openai_error(dead)["code"]) == (
        "server_error",
        "bad_gateway",
    )

    backend_says = await client.get("/v1/status", params={"code": "404"}, headers=auth)
    assert backend_says.json() == {"error": "as asked"}  # the backend's own: untouched


async def test_the_contract_routes_keep_the_contract_shape(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.post("/api/projects/x", headers={"Authorization": "Bearer nope"})
    assert unknown.json()["success"] is False and unknown.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthorized", ("invalid_request_error", "invalid_api_key")),
        (429, "insufficient_credits", ("insufficient_quota", "insufficient_quota")),
        (429, "rate_limited", ("requests", "rate_limit_exceeded")),
        (403, "forbidden_route", ("permission_error", "forbidden_route")),
        (409, "conflict", ("invalid_request_error", "conflict")),
        (422, "idempotency_mismatch", ("invalid_request_error", "idempotency_mismatch")),
        (503, "unavailable", ("server_error", "unavailable")),
        (504, "gateway_timeout", ("server_error", "gateway_timeout")),
    ],
)
def test_openai_names(status: int, code: str, expected: tuple[str, str]) -> None:
    body = openai_error_body(status, error_body(code, "why", creditInfo={"tokensUsed": 0}))
    assert body == {
        "error": {"message": "why", "type": expected[0], "param": None, "code": expected[1]},
        "creditInfo": {"tokensUsed": 0},
    }
