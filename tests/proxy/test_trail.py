"""What a proxied request leaves behind for operators: its access line and its spans.

The app in-process against a backend that records the headers it gets; the spans go to the
SDK's in-memory exporter through a ``Tracing`` handed to ``create_app``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.accounts.operations import CreatedAccount, create_account
from gateway.app import create_app
from gateway.logs import ACCESS_LOGGER, formatter
from gateway.proxy.trail import Trail
from gateway.services import Services, open_services
from gateway.settings import Route, Settings
from gateway.tracing import Tracing
from tests.support.gateways import free_port
from tests.support.recording import TOKENS, Recording, gateway_client, recording_backend
from tests.support.stores import fresh_store

FIELDS = {
    "request_id",
    "account",
    "key_id",
    "route",
    "method",
    "status",
    "outcome",
    "credits",
    "tokens",
    "upstream_ms",
    "total_ms",
}
IDEMPOTENCY_KEY = "order-4711-do-not-log"


@pytest.fixture
async def backend() -> AsyncIterator[Recording]:
    async with recording_backend() as recording:
        yield recording


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, pg_url: str, sqlite_template: Path, backend: Recording
) -> Settings:
    """The access line on, tracing as the settings' default has it (off)."""
    store = fresh_store("sqlite", tmp_path, pg_url, sqlite_template=sqlite_template)
    return Settings.load(
        redis_url=redis_url,
        database_url=store,
        access_log=True,
        routes=[
            Route(prefix="/api/projects/", upstream=backend.url),
            Route(prefix="/api/dead/", upstream=f"http://127.0.0.1:{free_port()}"),
        ],
    )


@pytest.fixture
async def services(settings: Settings, real_redis: aioredis.Redis) -> AsyncIterator[Services]:
    svc = open_services(settings, redis=real_redis)
    yield svc
    svc.db.dispose()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


@pytest.fixture
async def caller(services: Services) -> CreatedAccount:
    return await create_account(services, tier="pro", months=1)


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app as the settings have it: the access line on, tracing off."""
    async with gateway_client(create_app(settings, services=services)) as client:
        yield client


@pytest.fixture
async def traced(
    settings: Settings, services: Services, tracing: Tracing
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, its spans going to ``exporter``."""
    async with gateway_client(create_app(settings, services=services, tracing=tracing)) as client:
        yield client


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    return caplog


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in FIELDS}


def auth(created: CreatedAccount) -> dict[str, str]:
    return {"Authorization": f"Bearer {created.api_key}"}


# -- the access line ---------------------------------------------------------------------------


async def test_a_charged_call_leaves_one_line_with_its_facts_and_no_secret(
    client: httpx.AsyncClient, caller: CreatedAccount, access: pytest.LogCaptureFixture
) -> None:
    headers = auth(caller) | {"Idempotency-Key": IDEMPOTENCY_KEY}
    response = await client.post("/api/projects/x", headers=headers, content=b"{}")
    assert response.status_code == 200
    [record] = access_records(access)
    fields = fields_of(record)
    upstream_ms, total_ms = fields.pop("upstream_ms"), fields.pop("total_ms")
    assert fields == {
        "request_id": response.headers["x-request-id"],
        "account": caller.account_id,
        "key_id": caller.key_id,
        "route": "/api/projects/",
        "method": "POST",
        "status": 200,
        "outcome": "charged",
        "credits": 1,
        "tokens": TOKENS,
    }
    assert 0 <= upstream_ms <= total_ms
    json_line = formatter("json").format(record)
    assert FIELDS | {"time", "level", "logger", "message"} <= set(json.loads(json_line))
    text_line = formatter("text").format(record)
    assert f"request_id={fields['request_id']} POST /api/projects/ 200 charged " in text_line
    assert f"account={caller.account_id} key_id={caller.key_id} credits=1 tokens=7 " in (text_line)
    for line in (json_line, text_line):
        assert caller.api_key not in line and IDEMPOTENCY_KEY not in line


async def test_refusals_and_failures_leave_their_line_too(
    client: httpx.AsyncClient, services: Services, access: pytest.LogCaptureFixture
) -> None:
    created = await create_account(services, tier="free")  # 5 credits
    paths = ["/api/projects/status/503", "/api/dead/x", *["/api/projects/x"] * 6]
    statuses = [(await client.get("/api/projects/x")).status_code]
    for path in paths:
        statuses.append((await client.get(path, headers=auth(created))).status_code)
    assert statuses == [401, 503, 502, 200, 200, 200, 200, 200, 429]
    lines = [fields_of(r) for r in access_records(access)]
    seen = [(f["status"], f["outcome"], f["account"], f["credits"], f["tokens"]) for f in lines]
    charged = (200, "charged", created.account_id, 1, TOKENS)
    assert seen == [
        (401, "unauthorized", None, 0, 0),
        (503, "refunded", created.account_id, 0, 0),
        (502, "bad_gateway", created.account_id, 0, 0),
        *[charged] * 5,
        (429, "insufficient", created.account_id, 0, 0),
    ]
    called = [f["upstream_ms"] is not None for f in lines]
    assert called == [False, True, True, *[True] * 5, False]


async def test_no_line_when_the_access_log_is_off(
    settings: Settings,
    services: Services,
    caller: CreatedAccount,
    access: pytest.LogCaptureFixture,
) -> None:
    quiet = dataclasses.replace(settings, access_log=False)
    async with gateway_client(create_app(quiet, services=services)) as client:
        assert (await client.get("/api/projects/x", headers=auth(caller))).status_code == 200
    assert access_records(access) == []


async def test_a_request_that_sent_nothing_says_so(access: pytest.LogCaptureFixture) -> None:
    """The client left before the answer, or an error the router answers 500: no status."""

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    route = Route(prefix="/api/projects/", upstream="http://127.0.0.1:1")
    scope = {"method": "GET", "headers": [(b"authorization", b"Bearer cg_secret")]}
    Trail(route, scope, "r1", send, log=True, tracing=None).end("client_gone")
    [record] = access_records(access)
    assert (record.__dict__["status"], record.__dict__["upstream_ms"]) == (None, None)
    assert record.getMessage().startswith("GET /api/projects/ - client_gone account=- key_id=- ")


# -- the spans ---------------------------------------------------------------------------------


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_a_charged_call_is_a_span_with_its_reserve_and_upstream_children(
    traced: httpx.AsyncClient,
    caller: CreatedAccount,
    backend: Recording,
    exporter: InMemorySpanExporter,
) -> None:
    response = await traced.get("/api/projects/x", headers=auth(caller))
    assert response.status_code == 200
    spans = by_name(exporter)
    assert set(spans) == {"proxy GET /api/projects/", "redis reserve", "upstream GET"}
    request = spans["proxy GET /api/projects/"]
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert request.status.status_code == StatusCode.UNSET
    assert dict(request.attributes or {}) | {"creditgate.upstream_ms": 0} == {
        "http.request.method": "GET",
        "http.route": "/api/projects/",
        "http.response.status_code": 200,
        "creditgate.request_id": response.headers["x-request-id"],
        "creditgate.account": caller.account_id,
        "creditgate.key_id": caller.key_id,
        "creditgate.outcome": "charged",
        "creditgate.credits": 1,
        "creditgate.tokens": TOKENS,
        "creditgate.upstream_ms": 0,
    }
    for child in (spans["redis reserve"], spans["upstream GET"]):
        assert child.kind == SpanKind.CLIENT
        assert (trace_id(child), parent_id(child)) == (trace_id(request), span_id(request))
    upstream = spans["upstream GET"]
    assert (upstream.attributes or {})["http.response.status_code"] == 200
    [seen] = backend.seen
    version, sent_trace, sent_parent, _flags = seen["traceparent"].split("-")
    assert (version, sent_trace, sent_parent) == (
        "00",
        f"{trace_id(request):032x}",
        f"{span_id(upstream):016x}",
    )


async def test_a_client_traceparent_is_continued(
    traced: httpx.AsyncClient,
    caller: CreatedAccount,
    backend: Recording,
    exporter: InMemorySpanExporter,
) -> None:
    client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = auth(caller) | {"traceparent": f"00-{client_trace}-{client_span}-01"}
    assert (await traced.get("/api/projects/x", headers=headers)).status_code == 200
    request = by_name(exporter)["proxy GET /api/projects/"]
    assert f"{trace_id(request):032x}" == client_trace
    assert parent_id(request) == int(client_span, 16)
    [seen] = backend.seen
    _, sent_trace, sent_parent, _ = seen["traceparent"].split("-")
    assert sent_trace == client_trace and sent_parent != client_span


async def test_a_refunded_call_traces_its_refund_and_a_5xx_is_an_error(
    traced: httpx.AsyncClient, caller: CreatedAccount, exporter: InMemorySpanExporter
) -> None:
    response = await traced.get("/api/projects/status/503", headers=auth(caller))
    assert response.status_code == 503
    spans = by_name(exporter)
    assert set(spans) == {
        "proxy GET /api/projects/",
        "redis reserve",
        "upstream GET",
        "redis refund",
    }
    request = spans["proxy GET /api/projects/"]
    assert parent_id(spans["redis refund"]) == span_id(request)
    assert request.status.status_code == StatusCode.ERROR
    assert (request.attributes or {})["creditgate.outcome"] == "refunded"


async def test_tracing_off_forwards_only_the_clients_traceparent(
    settings: Settings, client: httpx.AsyncClient, caller: CreatedAccount, backend: Recording
) -> None:
    """No span can be made: without a ``Tracing`` nothing imports OpenTelemetry at all
    (``tests/test_tracing.py`` shows that in a fresh process)."""
    theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert settings.tracing == "off"
    await client.get("/api/projects/x", headers=auth(caller))
    await client.get("/api/projects/x", headers=auth(caller) | {"traceparent": theirs})
    assert [seen.get("traceparent") for seen in backend.seen] == [None, theirs]
