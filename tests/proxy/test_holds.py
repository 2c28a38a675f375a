"""Shutdown's wait for settles and refunds in flight is bounded; the keep-alive beats."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import Unavailable
from gateway.metrics import Metrics
from gateway.proxy.holds import Holds, InFlight


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


class Extends:
    """An engine whose extends answer ``answers`` in turn (an exception is raised), each after
    ``pause`` seconds; the hold is 90 ms: a beat every 30 ms."""

    hold_ms = 90

    def __init__(self, *answers: bool | Exception, pause: float = 0.0) -> None:
        self.answers = list(answers)
        self.pause = pause
        self.calls: list[str] = []
        self.stopped: list[str] = []

    async def extend(self, account: str, request_id: str) -> bool:
        self.calls.append(request_id)
        try:
            await asyncio.sleep(self.pause)
        except asyncio.CancelledError:
            self.stopped.append(request_id)
            raise
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def holds_on(engine: Extends) -> Holds:
    return Holds(
        engine=engine,  # type: ignore[arg-type]
        metrics=Metrics(),
        restore=None,  # type: ignore[arg-type]
        inflight=InFlight(),
    )


async def test_a_live_request_beats_until_its_hold_is_gone_a_failed_beat_goes_on() -> None:
    engine = Extends(True, Unavailable("redis: connection refused"), True, False)
    holds = holds_on(engine)
    stop = holds.keep_alive("acct_1", "rid-1")
    for _ in range(500):
        if len(engine.calls) == 4:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # three beats' time more: none comes, the hold is gone
    assert engine.calls == ["rid-1"] * 4
    stop()


async def test_a_request_that_ends_beats_no_more_and_stops_its_extend_in_flight() -> None:
    engine = Extends(pause=10)
    holds = holds_on(engine)
    quick = holds.keep_alive("acct_1", "quick")
    quick()  # ended before its first beat
    slow = holds.keep_alive("acct_1", "slow")
    await asyncio.sleep(0.06)  # the first beat is due after 30 ms, checked every 15 ms
    assert engine.calls == ["slow"]
    slow()
    await asyncio.sleep(0.1)
    assert engine.calls == engine.stopped == ["slow"]  # its extend stopped, no beat after
