"""Shutdown's wait for settles and refunds in flight is bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.proxy.holds import InFlight


async def test_drain_gives_up_on_a_settle_that_never_ends(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that never answers used to hold shutdown (and SIGTERM) forever."""
    inflight = InFlight()
    stuck = inflight.spawn(asyncio.Event().wait())  # a settle whose reply never comes
    done = inflight.spawn(asyncio.sleep(0))
    started = time.monotonic()
    await inflight.drain(timeout=0.2)
    assert time.monotonic() - started < 5
    assert done.done() and not done.cancelled()
    assert stuck.cancelled()
    assert len(inflight) == 0
    assert "1 settle(s) or refund(s) still waiting on Redis" in caplog.text
