"""A sync worker's metrics endpoint: its own figures, the lag in seconds, its process."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.services import Services
from store.errors import StoreUnavailable
from store.records import Movement
from sync.metrics import serve_metrics
from sync.worker import SyncWorker
from tests.support.gateways import free_port
from tests.support.scrapes import total


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the endpoint, not the store
async def test_the_endpoint_shows_the_events_applied_and_the_lag_in_seconds(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    for account in ("acct-1", "acct-2", "acct-3"):
        await services.credits.open(account)
    worker = SyncWorker(services)
    port = free_port()
    stop = serve_metrics(worker.stats, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def scrape() -> str:
                response = await http.get("/metrics")
                assert response.status_code == 200
                return response.text

            def store_down(movements: list[Movement]) -> None:
                raise StoreUnavailable("the store is down")

            await asyncio.sleep(1.2)  # the events are over a second old when the pass fails
            monkeypatch.setattr(worker, "_commit", store_down)
            assert await worker.run_once() == 0
            text = await scrape()
            assert 1.2 <= total(text, "creditgate_sync_lag_seconds") < 60
            assert total(text, "creditgate_sync_errors_total") == 1
            assert total(text, "creditgate_sync_events_applied_total") == 0

            monkeypatch.undo()
            assert await worker.run_once() == 3
            text = await scrape()
            assert total(text, "creditgate_sync_events_applied_total") == 3
            assert total(text, "creditgate_sync_lag_seconds") == 0
            assert total(text, "creditgate_sync_passes_total") == 2
            assert total(text, "process_cpu_seconds_total") > 0
            assert total(text, "process_open_fds") > 0
    finally:
        await asyncio.to_thread(stop)
