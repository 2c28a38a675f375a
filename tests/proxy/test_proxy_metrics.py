"""``/metrics`` of an app in-process, read with prometheus_client's parser: every call counted
once by route and outcome, credits charged and refunded exactly, the open reservations back to
0 when the calls are over, the process's own metrics, and no sync worker figures."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.services import Services, open_services
from gateway.settings import Route, Settings, Tier
from tests.support.gateways import wait_for
from tests.support.scrapes import series, total


@pytest.fixture
async def two_routes(
    settings: Settings, stub: str, real_redis: aioredis.Redis
) -> AsyncIterator[Services]:
    """Services whose settings route ``/api/projects/`` (cost 1) and ``/api/costly/`` (cost 2)
    to the stub, and give ``pro`` one request a minute."""
    routed = dataclasses.replace(
        settings,
        routes=[
            Route(prefix="/api/projects/", upstream=stub),
            Route(prefix="/api/costly/", upstream=stub, cost=2),
        ],
        tiers={**settings.tiers, "pro": Tier(credits=100, requests_per_minute=1)},
    )
    svc = open_services(routed, redis=real_redis)
    yield svc
    svc.db.dispose()


async def scrape(app: Starlette) -> str:
    """``GET /metrics``, checked to be the Prometheus text format."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_each_call_is_counted_once_by_route_and_outcome_with_exact_credits(
    two_routes: Services,
) -> None:
    services = two_routes
    free = await create_account(services, tier="free")  # 5 credits
    pro = await create_account(services, tier="pro", months=1)  # one request a minute
    calls = [
        (free, "/api/projects/x", 200),
        (free, "/api/projects/x", 200),
        (free, "/api/projects/status?code=500", 500),  # refunded
        (free, "/api/costly/x", 200),  # 2 credits: 1 left
        (free, "/api/costly/x", 429),  # insufficient_credits
        (free, "/api/projects/x", 200),
        (free, "/api/projects/x", 429),  # insufficient_credits
        (pro, "/api/projects/x", 200),
        (pro, "/api/projects/x", 429),  # rate_limited
        (None, "/api/projects/x", 401),
    ]
    app = create_app(services.settings, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for caller, path, status in calls:
                auth = {"Authorization": f"Bearer {caller.api_key}"} if caller else {}
                assert (await client.get(path, headers=auth)).status_code == status, path
    text = await scrape(app)  # the lifespan's shutdown has awaited every settle

    assert series(text, "creditgate_requests_total", "route", "outcome") == {
        ("/api/projects/", "charged"): 4,
        ("/api/projects/", "refunded"): 1,
        ("/api/projects/", "insufficient"): 1,
        ("/api/projects/", "rate_limited"): 1,
        ("/api/projects/", "unauthorized"): 1,
        ("/api/costly/", "charged"): 1,
        ("/api/costly/", "insufficient"): 1,
    }
    assert series(text, "creditgate_reservations_total", "status") == {
        ("ok",): 6,
        ("insufficient",): 2,
        ("rate_limited",): 1,
    }
    assert total(text, "creditgate_credits_charged_total") == 6
    assert total(text, "creditgate_credits_refunded_total") == 1
    assert series(text, "creditgate_refunds_total", "reason") == {("upstream",): 1}
    assert series(text, "creditgate_upstream_latency_seconds_count", "route") == {
        ("/api/projects/",): 5,
        ("/api/costly/",): 1,
    }
    scripts = series(text, "creditgate_script_latency_seconds_count", "script")
    assert (scripts[("reserve",)], scripts[("settle",)], scripts[("refund",)]) == (9, 5, 1)
    assert total(text, "creditgate_open_reservations") == 0
    assert total(text, "creditgate_redis_errors_total") == 0
    assert total(text, "process_cpu_seconds_total") > 0
    assert total(text, "process_resident_memory_bytes") > 0
    assert "creditgate_sync_" not in text  # the sync workers serve their own


async def test_open_reservations_count_the_calls_in_flight_and_return_to_zero(
    settings: Settings, services: Services, gate: asyncio.Event
) -> None:
    created = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {created.api_key}"}
    app = create_app(settings, services=services)

    async def open_is(count: int) -> bool:
        return total(await scrape(app), "creditgate_open_reservations") == count

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            waiting = [
                asyncio.ensure_future(client.get("/api/projects/gated", headers=auth))
                for _ in range(3)
            ]
            await wait_for(lambda: open_is(3))
            gate.set()
            assert [(await call).status_code for call in waiting] == [200] * 3
            await wait_for(lambda: open_is(0))  # the settles have landed
            failed = await client.get("/api/projects/status?code=503", headers=auth)
            assert failed.status_code == 503
            assert await open_is(0)  # refunded before the answer
