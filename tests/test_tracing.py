"""Tracing's switch: refused when its packages are missing, exporters built from the setting,
and no OpenTelemetry module loaded at all while it is off. (The spans of a request:
tests/proxy/test_trail.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from gateway.app import open_tracing
from gateway.settings import ConfigError, Settings
from gateway.tracing import Tracing, exporter_for

OFF_CHECK = """
import asyncio, sys
if sys.argv[2] == "absent":
    sys.modules["opentelemetry"] = None  # as if not installed
import httpx
from gateway.app import create_app
from gateway.settings import Settings
from store.database import upgrade

async def main() -> None:
    upgrade(sys.argv[1])
    app = create_app(Settings.load(database_url=sys.argv[1], access_log=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.get("/api/projects/x", headers={"traceparent": "x"})
    assert response.status_code == 401, response.status_code
    print("gateway.tracing" in sys.modules)

asyncio.run(main())
"""


@pytest.mark.parametrize("packages", ["absent", "installed"])
def test_tracing_off_never_loads_the_tracing_glue(tmp_path: Path, packages: str) -> None:
    """A proxied request (its access line on) in a fresh process with tracing off: it needs no
    OpenTelemetry package, and the gateway's one importer of them, ``gateway.tracing``, stays
    unloaded. (redis-py imports OpenTelemetry for its own optional metrics when installed:
    once, at import, whatever the gateway's settings.)"""
    done = subprocess.run(
        [sys.executable, "-c", OFF_CHECK, f"sqlite:///{tmp_path / 'store.db'}", packages],
        env={"PATH": "/usr/bin:/bin", "CREDITGATE_REDIS_URL": "embedded"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("mode", "missing"),
    [
        ("console", "opentelemetry.sdk.trace"),
        ("otlp", "opentelemetry.sdk.trace"),
        ("otlp", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ],
)
def test_tracing_without_its_packages_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, mode: str, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    monkeypatch.setenv("CREDITGATE_TRACING", mode)
    with pytest.raises(ConfigError, match=r"tracing: .*pip install 'creditgate\[otel\]'"):
        Settings.load()


def test_an_unknown_tracing_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_TRACING", "jaeger")
    with pytest.raises(ConfigError, match="tracing"):
        Settings.load()


@pytest.mark.parametrize(
    ("mode", "exporter"), [("console", ConsoleSpanExporter), ("otlp", OTLPSpanExporter)]
)
def test_the_setting_picks_the_exporter(mode: Literal["console", "otlp"], exporter: type) -> None:
    assert isinstance(exporter_for(mode), exporter)


def test_the_app_builds_a_tracer_only_when_asked_naming_the_service() -> None:
    assert open_tracing(Settings.load()) is None
    tracing = open_tracing(Settings.load(tracing="console"))
    assert isinstance(tracing, Tracing)
    try:
        assert tracing.provider.resource.attributes["service.name"] == "creditgate"
    finally:
        tracing.shutdown()
