"""A reservation after the answer: refund, settle, keep alive, release; and shutdown's wait.

The request flow (``gateway.proxy.flow``) decides *what* becomes of a request's hold; this
module owns *how*, with Redis failing now and then. The policy:

- refund (the backend failed or answered other than 2xx, the client left before the answer,
  a gateway error): one attempt, awaited by the request (a 502 / 504 or a non-2xx answer
  shows its figures) but shielded, so a cancelled request still refunds. If Redis fails, it
  is logged and left to the reaper, which refunds the hold at its deadline.
- settle (a 2xx answer, once it has gone out): not awaited. The engine's batcher sends it
  with the next reserve's round trip. A failed attempt, or a ``missing`` answer (Redis lost
  the account), is retried by a task after each pause of ``SETTLE_RETRIES``: four attempts
  in all, the account restored from the store before any attempt that follows a
  ``missing``. Settles are idempotent, so a retry of one that had landed changes nothing.
  After the last failure, logged: the reaper refunds the hold at its deadline.
- keep alive: a request alive longer than its hold pushes the deadline out every third of
  the hold (``engine.extend``), so the reaper refunds only the holds of replicas that are
  gone. A failed extend is logged and the beats go on; they stop once the hold is gone.
- release: a reserve interrupted (Redis failed or the request was cancelled) may or may not
  have held; it is refunded quietly in the background, else by the reaper.

``InFlight`` tracks every refund, release, settle and retry: they finish even if their
request is cancelled, and the app's shutdown waits for them (``drain``).

A reservation the flow reports ``opened`` counts in ``creditgate_open_reservations`` until its
refund or its settle has ended, landed or left to the reaper; a second refund of the same
hold does not count it twice. Credits and refunds are counted by what the scripts answered,
so a repeat that changed nothing adds nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.credits.engine import CreditEngine
from gateway.credits.results import AccountState, Settlement
from gateway.errors import Unavailable
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.tracing import Tracing

log = logging.getLogger("creditgate.proxy")

DRAIN_TIMEOUT_S = 20.0
"""The longest shutdown waits for settles and refunds in flight (uvicorn allows 30 s)."""
SETTLE_RETRIES = (0.05, 0.25, 1.0)
"""Pauses between the attempts of a settle whose Redis call failed."""

T = TypeVar("T")
Restore = Callable[[str], Awaitable[AccountState | None]]
"""Load an account Redis lost from the store; None when the store does not know it either."""


class InFlight:
    """Settles and refunds in flight: they finish even if the request is cancelled, and
    shutdown waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def track(self, outcome: asyncio.Future[T]) -> asyncio.Future[T]:
        """Keep ``outcome`` (a task or a future) until it is done."""
        self._tasks.add(outcome)
        outcome.add_done_callback(self._tasks.discard)
        return outcome

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return self.track(asyncio.ensure_future(work))

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``spawn``, then wait for the outcome; cancelling the waiter leaves the work be."""
        return await asyncio.shield(self.spawn(work))

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Wait for every settle still running (lifespan shutdown), at most ``timeout``
        seconds: a Redis that never answers must not keep the process from exiting. What is
        left then is logged and cancelled; the reaper refunds those holds at their deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)  # wait() cancels nothing
        if not self._tasks:
            return
        stuck = list(self._tasks)
        log.warning(
            "shutdown: %d settle(s) or refund(s) still waiting on Redis after %g s; "
            "cancelled, the reaper will refund their holds",
            len(stuck),
            timeout,
        )
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


class Holds:
    """What becomes of each request's reservation once its answer is decided (the policy is in
    the module docstring); built once per process by the app's lifespan, handed to the flow.
    With ``tracing``, a refund the request waits on is a span of the request's."""

    def __init__(
        self,
        *,
        engine: CreditEngine,
        metrics: Metrics,
        restore: Restore,
        inflight: InFlight,
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.restore = restore
        self.inflight = inflight
        self.tracing = tracing
        self._open: set[str] = set()
        """Request ids of the reservations ``opened`` whose settle or refund has not ended."""

    def opened(self, request_id: str) -> None:
        """A request of this replica holds a reservation now: count it open."""
        self._open.add(request_id)
        self.metrics.open_reservations.inc()

    def _closed(self, request_id: str) -> None:
        if request_id in self._open:
            self._open.remove(request_id)
            self.metrics.open_reservations.dec()

    async def refund(self, account: str, request_id: str, reason: str) -> AccountState | None:
        """Give the hold back; the account as the refund left it, None if Redis failed (the
        reaper refunds it at its deadline) or no longer knows it. The metric's reason is the
        first word of ``reason``."""
        return await self.inflight.run(self._refund(account, request_id, reason))

    async def _refund(self, account: str, request_id: str, reason: str) -> AccountState | None:
        work = self.engine.refund(account, request_id, reason=reason)
        if self.tracing is not None:
            work = self.tracing.run("redis refund", work, {"creditgate.reason": reason})
        try:
            settlement = await work
        except Unavailable as exc:
            log.error("refund failed: %s", exc, extra={"request_id": request_id})
            return None
        finally:
            self._closed(request_id)
        if settlement.status == "refunded":
            self.metrics.refunds(reason.split(" ")[0]).inc()
            self.metrics.credits_refunded.inc(settlement.credits)
        return settlement.account

    def keep_alive(self, account: str, request_id: str) -> Callable[[], None]:
        """While the request is alive, push its reservation's deadline out every third of the
        hold, so the reaper refunds only reservations whose replica is gone; returns the stop.

        A timer rather than a task: most requests end long before the first beat, and then
        cancelling a timer is all this costs them.
        """
        return _KeepAlive(self.engine, account, request_id).stop

    def release(self, account: str, request_id: str) -> None:
        """Refund a reservation that may or may not exist, in the background, quietly."""

        async def release() -> None:
            try:
                await self.engine.refund(account, request_id, reason="reserve interrupted")
            except Unavailable:
                pass  # the reaper refunds it at its deadline

        self.inflight.spawn(release())

    def settle(self, account: str, request_id: str, tokens: int) -> None:
        """Charge the reservation without waiting: the answer has gone out. The engine defers
        the call to share the next reserve's round trip; a failed or ``missing`` attempt is
        retried in a task of its own (``_charge``). Shutdown awaits both (``InFlight``)."""
        settled = self.engine.settle_soon(account, request_id, tokens)
        self.inflight.track(settled).add_done_callback(
            functools.partial(self._settled, account, request_id, tokens)
        )

    def _settled(
        self, account: str, request_id: str, tokens: int, settled: asyncio.Future[Settlement]
    ) -> None:
        if settled.cancelled():  # shutdown gave up waiting: the reaper refunds the hold
            log.error("settle abandoned at shutdown", extra={"request_id": request_id})
            self._closed(request_id)
            return
        error = settled.exception()
        if error is None and settled.result().status != "missing":
            self._count(request_id, settled.result())
            return
        if error is not None:
            if not isinstance(error, Unavailable):
                log.error("settle failed: %r", error, extra={"request_id": request_id})
        retry = self._charge(account, request_id, tokens, restore_first=error is None)
        self.inflight.spawn(retry).add_done_callback(lambda _: self._closed(request_id))

    async def _charge(
        self, account: str, request_id: str, tokens: int, *, restore_first: bool
    ) -> None:
        """Settle again after a failed attempt: one lost round trip must not turn a success
        into the reaper's refund (settles are idempotent). An account Redis lost meanwhile
        is restored from the store first (``restore_first``: the last answer was missing)."""
        for pause in SETTLE_RETRIES:
            await asyncio.sleep(pause)
            try:
                if restore_first:
                    await self.restore(account)
                settled = await self.engine.settle(account, request_id, tokens)
            except Unavailable as exc:
                log.warning("settle retry failed: %s", exc, extra={"request_id": request_id})
                continue
            if settled.status != "missing":
                self._count(request_id, settled)
                return
            restore_first = True
        log.error(
            "settle failed %d times; the reaper will refund the reservation",
            len(SETTLE_RETRIES) + 1,
            extra={"request_id": request_id},
        )

    def _count(self, request_id: str, settled: Settlement) -> None:
        self._closed(request_id)
        if settled.status == "charged":  # not a repeat of a settle that had landed
            self.metrics.credits_charged.inc(settled.credits)


class _KeepAlive:
    """The beats of one request's ``Holds.keep_alive``: a timer, then an extend, then a timer...

    An object rather than closures that call each other: those form a reference cycle (each
    closure's cell holds the other) that outlives the request until the cycle collector runs,
    about fifteen objects a request, and a server then pays for it in long collections. Here
    the only cycle is the pending beat holding ``self``, and ``stop`` breaks it.
    """

    __slots__ = ("_account", "_beat", "_engine", "_every", "_loop", "_request_id")

    def __init__(self, engine: CreditEngine, account: str, request_id: str) -> None:
        self._engine = engine
        self._account = account
        self._request_id = request_id
        self._loop = asyncio.get_running_loop()
        self._every = engine.hold_ms / 3000
        self._beat: asyncio.TimerHandle | asyncio.Future[None] | None = self._loop.call_later(
            self._every, self._start
        )

    def _start(self) -> None:
        self._beat = asyncio.ensure_future(self._extend())

    async def _extend(self) -> None:
        try:
            alive = await self._engine.extend(self._account, self._request_id)
        except Unavailable as exc:
            # The answer goes on; at worst the reaper refunds it at the old deadline.
            log.warning("extending the reservation failed: %s", exc)
            alive = True
        if alive and self._beat is not None:
            self._beat = self._loop.call_later(self._every, self._start)

    def stop(self) -> None:
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.cancel()
